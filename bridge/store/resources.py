"""Resources and memberships: every query of the SCIM surface (DESIGN §4).

Membership changes are row inserts and deletes; a group is never loaded to change it.
Lists are one filtered ``SELECT`` plus a ``COUNT``; paging is by offset or by keyset cursor.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from scim2_models import InvalidFilterException
from scim2_models import InvalidValueException
from scim2_models import Resource
from scim2_models.path import AttrPath
from scim2_models.path import FilterNode
from sqlalchemy import Connection
from sqlalchemy import and_
from sqlalchemy import bindparam
from sqlalchemy import case
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import literal
from sqlalchemy import literal_column
from sqlalchemy import select
from sqlalchemy import tuple_
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from bridge.store import names
from bridge.store.cursors import CursorSigner
from bridge.store.cursors import fingerprint
from bridge.store.dialect import AV
from bridge.store.dialect import Expr
from bridge.store.dialect import M
from bridge.store.dialect import Predicate
from bridge.store.dialect import R
from bridge.store.engine import scim_fold
from bridge.store.filters import SqlFilter
from bridge.store.raw import Sql
from bridge.store.raw import execute
from bridge.store.raw import execute_many
from bridge.store.raw import read_json
from bridge.store.raw import read_time
from bridge.store.raw import stored_bool
from bridge.store.raw import stored_json
from bridge.store.raw import stored_time
from bridge.store.values import IndexedAttribute
from bridge.store.values import index_rows
from bridge.store.values import indexed_attributes


def person_keys(key: str, policy: str) -> Any:
    """A user is ``key``: their id, externalId, or userName as SCIM compares it (``policy``)."""
    return (R.c.id == key) | (R.c.external_id == key) | (R.c.name_key == names.key(key, policy))


class UniquenessError(Exception):
    """A write would duplicate a unique attribute (RFC 7644 §3.3: 409 ``uniqueness``)."""

    def __init__(self, attribute: str) -> None:
        super().__init__(f"{attribute} is already taken")
        self.attribute = attribute


@dataclass
class Member:
    """One row of ``memberships`` seen from either side, with the other side's display."""

    value: str
    type: str
    display: str | None


@dataclass
class Record:
    """A stored resource, as plain data."""

    pk: int
    id: str
    type: str
    external_id: str | None
    name: str
    display: str | None
    active: bool | None
    doc: dict[str, Any]
    version: int
    created: datetime
    last_modified: datetime
    members: list[Member] | None = field(default=None)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass(frozen=True)
class Page:
    records: list[Record]
    total: int
    next_cursor: str | None


_RECORD_COLUMNS = (
    R.c.pk,
    R.c.id,
    R.c.type,
    R.c.external_id,
    R.c.name,
    R.c.display,
    R.c.active,
    R.c.doc,
    R.c.version,
    R.c.created,
    R.c.last_modified,
)


# Statements of the hot paths, built once: SQLAlchemy then skips construction and cache-key work.
_BY_ID = select(*_RECORD_COLUMNS).where(R.c.id == bindparam("id"))
_BY_TYPE_AND_ID = select(*_RECORD_COLUMNS).where(
    R.c.id == bindparam("id"), R.c.type == bindparam("type")
)
_BY_TYPE_AND_ID_FOR_UPDATE = _BY_TYPE_AND_ID.with_for_update()
_COLUMNS = "pk, id, type, external_id, name, display, active, doc, version, created, last_modified"
_LOOKUP_COLUMNS = ("id", "external_id", "name_key")


def _lookup(resource_type: str, column: str) -> Sql:
    """The IdP's lookup (``userName eq "x"``, ``externalId eq "x"``, ``id eq "x"``): one index
    read. The type is written into the SQL, not bound: SQLite can only use the partial unique
    index on ``userName`` (``WHERE type = 'User'``) for a bound type by planning the statement
    again at every run, which costs three times the read."""
    if not resource_type.isalpha() or column not in _LOOKUP_COLUMNS:
        raise ValueError(f"no lookup for {resource_type}.{column}")
    return Sql(
        f"SELECT {_COLUMNS} FROM resources"  # noqa: S608 - a model name and a column name
        f" WHERE type = '{resource_type}' AND {column} = :value ORDER BY pk LIMIT :limit"
    )


_GROUPS_OF_ONE = Sql(
    "SELECT m.group_id, r.display FROM memberships m JOIN resources r ON r.id = m.group_id"
    " WHERE m.member_id = :member ORDER BY r.pk"
)
_INSERT = Sql(
    "INSERT INTO resources"
    " (id, type, external_id, name, name_key, display, active, doc, version, created,"
    " last_modified)"
    " VALUES (:id, :type, :external_id, :name, :name_key, :display, :active, :doc, :version,"
    " :created, :last_modified) RETURNING pk"
)
_INSERT_VALUES = Sql(
    "INSERT INTO attribute_values (resource_pk, path, position, value_key)"
    " VALUES (:resource_pk, :path, :position, :value_key)"
)


def _raw_record(row: Sequence[Any]) -> Record:
    """A record from a row of ``_COLUMNS`` (as the driver or SQLAlchemy hands it back)."""
    pk, id_, type_, external_id, name, display, active, doc, version, created, modified = row
    return Record(
        pk=pk,
        id=id_,
        type=type_,
        external_id=external_id,
        name=name,
        display=display,
        active=None if active is None else bool(active),
        doc=read_json(doc),
        version=version,
        created=read_time(created),
        last_modified=read_time(modified),
    )


def _record(row: Any) -> Record:
    """A record from a SQLAlchemy row led by ``_RECORD_COLUMNS``."""
    return _raw_record(tuple(row)[: len(_RECORD_COLUMNS)])


def _unique_violation(exc: Exception) -> UniquenessError:
    """SQLAlchemy's IntegrityError, or the driver's (statements run through ``raw``)."""
    message = str(getattr(exc, "orig", exc)).lower()
    if "external_id" in message:
        return UniquenessError("externalId")
    if "pkey" in message or "resources.id" in message:
        return UniquenessError("id")
    return UniquenessError("userName")


class ResourceStore:
    """Queries over ``resources``, ``attribute_values`` and ``memberships``."""

    def __init__(
        self,
        models: dict[str, type[Resource[Any]]],
        dialect: str,
        *,
        cursor_secret: str | None = None,
        username_policy: str = names.EXACT,
    ) -> None:
        self.models = models
        self.dialect = dialect
        self.cursors = CursorSigner(cursor_secret)  # None: the database's secret
        self.username_policy = username_policy  # bridge.store.names: how userNames are keyed
        self.filters: dict[str, SqlFilter] = {
            name: names.sql_filter(model, dialect, username_policy)
            for name, model in models.items()
        }
        self.lookups = {(t, c): _lookup(t, c) for t in models for c in _LOOKUP_COLUMNS}
        self.indexed: dict[str, tuple[IndexedAttribute, ...]] = {
            name: indexed_attributes(model) for name, model in models.items()
        }

    # -- reads -----------------------------------------------------------------------------

    def get(self, conn: Connection, resource_type: str | None, resource_id: str) -> Record | None:
        lookup = self.lookups.get((resource_type or "", "id"))
        if lookup is None:
            query, params = (
                (_BY_ID, {"id": resource_id})
                if resource_type is None
                else (_BY_TYPE_AND_ID, {"id": resource_id, "type": resource_type})
            )
            row = conn.execute(query, params).first()
            return _record(row) if row is not None else None
        found = execute(conn, lookup, {"value": resource_id, "limit": 1}).fetchone()
        return _raw_record(found) if found is not None else None

    def get_for_update(
        self, conn: Connection, resource_type: str, resource_id: str
    ) -> Record | None:
        query = _BY_TYPE_AND_ID if self.dialect == "sqlite" else _BY_TYPE_AND_ID_FOR_UPDATE
        row = conn.execute(query, {"id": resource_id, "type": resource_type}).first()
        return _record(row) if row is not None else None

    def find_ids(self, conn: Connection, ids: Iterable[str]) -> dict[str, str]:
        """The type of each id that exists."""
        ids = list(ids)
        if not ids:
            return {}
        rows = conn.execute(select(R.c.id, R.c.type).where(R.c.id.in_(ids)))
        return {row.id: row.type for row in rows}

    def _predicate(self, resource_type: str, node: FilterNode | None) -> Predicate:
        own: Predicate = R.c.type == resource_type
        if node is None:
            return own
        if self.dialect == "sqlite":
            # Without statistics SQLite would drive from the type index and visit every row;
            # telling it the type test is unselective makes it drive from the filter's index.
            own = func.likelihood(own, literal_column("0.9"))
        return and_(own, self.filters[resource_type](node))

    def _where(self, types: Sequence[str], node: FilterNode | None) -> Predicate:
        if len(types) == 1:
            return self._predicate(types[0], node)
        terms: list[Predicate] = []
        errors: list[InvalidFilterException] = []
        for resource_type in types:
            try:
                terms.append(self._predicate(resource_type, node))
            except InvalidFilterException as exc:
                # RFC 7644 §3.4.2.1: on the root endpoint, an attribute one type lacks is false.
                errors.append(exc)
        if not terms:
            raise errors[0]
        return _or(terms)

    def _sort_key(self, types: Sequence[str], sort_by: AttrPath | None) -> Expr:
        by_pk: Expr = R.c.pk
        if sort_by is None:
            return by_pk
        keys: list[tuple[str, Expr]] = []
        for resource_type in types:
            try:
                keys.append((resource_type, self.filters[resource_type].sort_key(sort_by)))
            except InvalidFilterException as exc:
                if len(types) == 1:
                    raise InvalidValueException(detail=f"sortBy: {exc.detail}") from exc
                continue
        if not keys:
            return by_pk
        if len(keys) == 1:
            return keys[0][1]
        return case(*((R.c.type == t, k) for t, k in keys), else_=literal(None))

    def _count(self, conn: Connection, where: Predicate) -> int:
        return int(conn.execute(select(func.count()).select_from(R).where(where)).scalar_one())

    def search(
        self,
        conn: Connection,
        types: Sequence[str],
        node: FilterNode | None,
        *,
        sort_by: AttrPath | None = None,
        descending: bool = False,
        start_index: int = 1,
        count: int,
        cursor: str | None = None,
        use_cursor: bool = False,
    ) -> Page:
        """One page of the resources of ``types`` matching ``node`` (RFC 7644 §3.4.2)."""
        owner = fingerprint(types, node, sort_by, descending) if use_cursor or cursor else ""
        after = self.cursors.decode(conn, cursor, owner) if cursor else None  # RFC 9865 §2
        if len(types) == 1 and node is not None and count > 0:
            plain = not (cursor or sort_by or descending) and start_index <= 1
            lookup = self.filters[types[0]].point_lookup(node) if plain else None
            if lookup is not None:
                column, value = lookup
                statement = self.lookups[(types[0], column)]
                rows = execute(conn, statement, {"value": value, "limit": count + 1}).fetchall()
                if len(rows) <= count:
                    return Page([_raw_record(row) for row in rows], len(rows), None)
        where = self._where(types, node)
        if count <= 0:
            return Page([], self._count(conn, where), None)
        sort = self._sort_key(types, sort_by)
        sort_value = sort  # sort keys are never NULL: missing values sort last (RFC 7644 §3.4.2.3)
        order = (sort_value.desc(), R.c.pk.desc()) if descending else (sort_value, R.c.pk)
        query = select(*_RECORD_COLUMNS, sort_value.label("sort_value")).where(where)
        if after is not None:
            last_sort, last_pk = after
            key = tuple_(sort_value, R.c.pk)
            bound = tuple_(literal(last_sort), literal(last_pk))
            query = query.where(key < bound if descending else key > bound)
        else:
            query = query.offset(max(start_index, 1) - 1)
        rows = conn.execute(query.order_by(*order).limit(count + 1)).all()
        records = [_record(row) for row in rows[:count]]
        # The first page holds every match: its length is the total (one query, not two —
        # the common IdP lookup, userName eq "x", answers in one indexed read).
        first_and_only = not cursor and start_index <= 1 and len(rows) <= count
        total = len(rows) if first_and_only else self._count(conn, where)
        next_cursor = None
        if use_cursor and len(rows) > count:
            last = rows[count - 1]
            next_cursor = self.cursors.encode(conn, last.sort_value, last.pk, owner)
        return Page(records, total, next_cursor)

    def ids_matching(
        self, conn: Connection, resource_type: str, node: FilterNode | None
    ) -> set[str]:
        """The ids of every resource of a type a filter matches (one query; rule scopes)."""
        rows = conn.execute(select(R.c.id).where(self._predicate(resource_type, node)))
        return {row.id for row in rows}

    def keys(self, conn: Connection, resource_type: str) -> list[tuple[str, str | None]]:
        """``(id, externalId)`` of every resource of a type."""
        rows = conn.execute(select(R.c.id, R.c.external_id).where(R.c.type == resource_type))
        return [(row.id, row.external_id) for row in rows]

    def scan(
        self, conn: Connection, resource_type: str, batch: int = 2000
    ) -> Iterator[list[Record]]:
        """Every resource of a type, in batches (keyset on pk, so memory stays flat)."""
        last = 0
        while True:
            rows = conn.execute(
                select(*_RECORD_COLUMNS)
                .where(R.c.type == resource_type, R.c.pk > last)
                .order_by(R.c.pk)
                .limit(batch)
            ).all()
            if not rows:
                return
            records = [_record(row) for row in rows]
            last = records[-1].pk
            yield records

    def find_person(self, conn: Connection, key: str) -> Record | None:
        """A user by id, externalId or userName (case-insensitively), for ``bridge explain``."""
        row = conn.execute(
            select(*_RECORD_COLUMNS)
            .where(R.c.type == "User")
            .where(person_keys(key, self.username_policy))
            .limit(1)
        ).first()
        return _record(row) if row is not None else None

    def members_of(self, conn: Connection, group_ids: Sequence[str]) -> dict[str, list[Member]]:
        """The members of each group, each with the member's display name."""
        rows = conn.execute(
            select(M.c.group_id, M.c.member_id, M.c.member_type, R.c.display)
            .join(R, R.c.id == M.c.member_id)
            .where(M.c.group_id.in_(group_ids))
            .order_by(M.c.group_id, R.c.pk)
        )
        found: dict[str, list[Member]] = {group_id: [] for group_id in group_ids}
        for row in rows:
            found[row.group_id].append(Member(row.member_id, row.member_type, row.display))
        return found

    def groups_of(self, conn: Connection, member_ids: Sequence[str]) -> dict[str, list[Member]]:
        """The groups each resource is a direct member of (RFC 7643 §4.1.2 ``groups``)."""
        if len(member_ids) == 1:  # one person (GET, the rules): a prepared statement, no IN list
            member = member_ids[0]
            return {
                member: [
                    Member(group_id, "direct", display)
                    for group_id, display in execute(conn, _GROUPS_OF_ONE, {"member": member})
                ]
            }
        rows = conn.execute(
            select(M.c.member_id, M.c.group_id, R.c.display)
            .join(R, R.c.id == M.c.group_id)
            .where(M.c.member_id.in_(member_ids))
            .order_by(M.c.member_id, R.c.pk)
        )
        found: dict[str, list[Member]] = {member_id: [] for member_id in member_ids}
        for row in rows:
            found[row.member_id].append(Member(row.group_id, "direct", row.display))
        return found

    # -- writes ----------------------------------------------------------------------------

    def insert(self, conn: Connection, record: Record) -> Record:
        values = {
            "id": record.id,
            "type": record.type,
            "external_id": record.external_id,
            "name": record.name,
            "name_key": _name_key(record, self.username_policy),
            "display": record.display,
            "active": stored_bool(conn, record.active),
            "doc": stored_json(conn, record.doc),
            "version": record.version,
            "created": stored_time(conn, record.created),
            "last_modified": stored_time(conn, record.last_modified),
        }
        # The caller's savepoint (group commit, Bulk) or transaction rolls a violation back.
        try:
            record.pk = execute(conn, _INSERT, values).fetchone()[0]
        except conn.dialect.loaded_dbapi.IntegrityError as exc:
            raise _unique_violation(exc) from exc
        self._index(conn, record)
        return record

    def replace(self, conn: Connection, record: Record) -> Record:
        """Write a new document (and its indexed columns) over a stored resource."""
        try:
            conn.execute(
                update(R)
                .where(R.c.pk == record.pk)
                .values(
                    external_id=record.external_id,
                    name=record.name,
                    name_key=_name_key(record, self.username_policy),
                    display=record.display,
                    active=record.active,
                    doc=record.doc,
                    version=record.version,
                    last_modified=record.last_modified,
                )
            )
        except IntegrityError as exc:
            raise _unique_violation(exc) from exc
        conn.execute(delete(AV).where(AV.c.resource_pk == record.pk))
        self._index(conn, record)
        return record

    def _index(self, conn: Connection, record: Record) -> None:
        rows = index_rows(record.doc, self.indexed[record.type])
        if rows:
            execute_many(
                conn,
                _INSERT_VALUES,
                [
                    {"resource_pk": record.pk, "path": path, "position": pos, "value_key": key}
                    for path, pos, key in rows
                ],
            )

    def reindex(self, conn: Connection, records: list[Record]) -> int:
        """Rebuild the attribute-value index of these records (after a schema change adds or
        changes a multi-valued attribute); the number of index rows written."""
        if not records:
            return 0
        conn.execute(delete(AV).where(AV.c.resource_pk.in_([r.pk for r in records])))
        written = 0
        for record in records:
            written += len(index_rows(record.doc, self.indexed[record.type]))
            self._index(conn, record)
        return written

    def touch(self, conn: Connection, resource_id: str, now: datetime) -> int:
        """Bump a resource's version and lastModified; the new version."""
        version = conn.execute(
            update(R)
            .where(R.c.id == resource_id)
            .values(version=R.c.version + 1, last_modified=now)
            .returning(R.c.version)
        ).scalar_one()
        return int(version)

    def delete(self, conn: Connection, record: Record) -> None:
        conn.execute(delete(AV).where(AV.c.resource_pk == record.pk))
        conn.execute(delete(M).where((M.c.group_id == record.id) | (M.c.member_id == record.id)))
        conn.execute(delete(R).where(R.c.pk == record.pk))

    def add_members(self, conn: Connection, group_id: str, members: dict[str, str]) -> list[str]:
        """Insert membership rows (id → type); the ids that were not members before."""
        if not members:
            return []
        rows = [
            {"group_id": group_id, "member_id": member_id, "member_type": member_type}
            for member_id, member_type in members.items()
        ]
        dialect_insert = sqlite_insert if self.dialect == "sqlite" else pg_insert
        statement = (
            dialect_insert(M)
            .on_conflict_do_nothing(index_elements=["group_id", "member_id"])
            .returning(M.c.member_id)
        )
        added: list[Any] = []
        for row in rows:  # RETURNING with executemany is not portable; groups of ids are small
            added.extend(conn.execute(statement.values(row)).scalars().all())
        return [str(member_id) for member_id in added]

    def remove_members(
        self, conn: Connection, group_id: str, member_ids: Iterable[str]
    ) -> list[str]:
        """Delete membership rows; the ids that were members."""
        ids = list(member_ids)
        if not ids:
            return []
        removed = conn.execute(
            delete(M)
            .where(M.c.group_id == group_id, M.c.member_id.in_(ids))
            .returning(M.c.member_id)
        ).scalars()
        return [str(member_id) for member_id in removed]

    def clear_members(self, conn: Connection, group_id: str) -> list[str]:
        removed = conn.execute(
            delete(M).where(M.c.group_id == group_id).returning(M.c.member_id)
        ).scalars()
        return [str(member_id) for member_id in removed]


def _or(terms: list[Predicate]) -> Predicate:
    result = terms[0]
    for term in terms[1:]:
        result = result | term
    return result


def _name_key(record: Record, username_policy: str) -> str:
    """The ``name_key`` of a record: its userName's key (``bridge.store.names``), or its
    displayName case-folded."""
    if record.type == "User":
        return names.key(record.name, username_policy)
    return str(scim_fold(record.name))
