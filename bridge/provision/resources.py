"""Use cases of the SCIM surface: one transaction per change — apply, journal (DESIGN §2).

Payloads are validated and PATCHes applied with scim2-models under the tolerant policy;
group membership changes become row deltas and never load the group.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from scim2_models import Context
from scim2_models import InvalidPathException
from scim2_models import InvalidValueException
from scim2_models import MutabilityException
from scim2_models import NotFoundException
from scim2_models import PatchOp
from scim2_models import Path
from scim2_models import PreconditionFailedException
from scim2_models import Resource
from scim2_models import SCIMException
from scim2_models import UniquenessException
from scim2_models.path import AttrPath
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import LogicalOperator
from scim2_models.path import ValuePath

from bridge.provision.projection import Projector
from bridge.rules.model import RuleSet
from bridge.schemas import PATCH_POLICY
from bridge.schemas import TOLERANT_POLICY
from bridge.schemas import Catalog
from bridge.schemas import scim_exception
from bridge.store import journal
from bridge.store.engine import Database
from bridge.store.resources import Member
from bridge.store.resources import Page
from bridge.store.resources import Record
from bridge.store.resources import ResourceStore
from bridge.store.resources import UniquenessError

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
_NOT_IN_DOC = ("id", "meta", "members", "groups")


@dataclass(frozen=True)
class Cause:
    """Who and what caused a write: the journal's actor and request id."""

    actor: str
    request_id: str | None = None


@dataclass
class Outcome:
    """What a write did: the record, and the journal seq it wrote (None: nothing changed)."""

    record: Record
    seq: int | None = None
    tolerances: list[str] = field(default_factory=list)
    members: list[Member] | None = None


def now_utc() -> datetime:
    return datetime.now(UTC)


def check_if_match(record: Record, if_match: str | None) -> None:
    """RFC 7644 §3.14: a stale ``If-Match`` is 412 and nothing is written."""
    if if_match is None:
        return
    tags = {tag.strip() for tag in if_match.split(",")}
    if "*" in tags:
        return
    strong = record.etag.removeprefix("W/")
    if record.etag not in tags and strong not in tags:
        raise PreconditionFailedException(
            detail=f"the resource is at version {record.etag}, not {if_match}"
        )


def _has_unknown(value: Any) -> bool:
    """Whether a validated model (or a nested one) dropped attributes it does not define."""
    if getattr(value, "unknown_attributes", None):
        return True
    fields = getattr(type(value), "model_fields", None)
    if not fields:
        return False
    for name in value.model_fields_set:  # an unset field holds nothing it could have dropped
        item = getattr(value, name, None)
        items = item if isinstance(item, list) else [item]
        if any(_has_unknown(i) for i in items if hasattr(type(i), "model_fields")):
            return True
    return False


def _creates_on_unmatched_filter(resource: Resource[Any], operations: list[dict[str, Any]]) -> bool:
    """Whether an add/replace names ``attr[filter]`` that matches no entry (Entra creates it)."""
    for operation in operations:
        path = operation.get("path")
        if (
            operation.get("op") not in ("add", "replace")
            or not isinstance(path, str)
            or "[" not in path
        ):
            continue
        try:
            found = Path.__class_getitem__(type(resource))(path).get(resource, strict=False)
        except (ValueError, SCIMException):
            continue
        if not found:
            return True
    return False


def _member_ids(value: Any) -> list[str]:
    """Member ids from ``[{"value": id}, …]`` (or bare ids, as some clients send)."""
    items = value if isinstance(value, list) else [value]
    ids = []
    for item in items:
        member = item.get("value") if isinstance(item, dict) else item
        if not isinstance(member, str) or not member:
            raise InvalidValueException(detail=f"a member needs a 'value' id, not {item!r}")
        ids.append(member)
    return ids


def _ids_selected(node: FilterNode) -> list[str] | None:
    """The ids ``value eq "id" [or value eq "id2"…]`` selects, or None for other filters."""
    if isinstance(node, Comparison):
        if node.attr_path.attr.lower() == "value" and node.op == CompareOperator.eq:
            return [str(node.value)]
        return None
    if isinstance(node, LogicalExpr) and node.op == LogicalOperator.or_:
        ids: list[str] = []
        for term in node.terms:
            found = _ids_selected(term)
            if found is None:
                return None
            ids.extend(found)
        return ids
    return None


@dataclass
class MemberDelta:
    """Membership changes a group PATCH asks for, in order."""

    clear: bool = False
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.clear or bool(self.add) or bool(self.remove)


def split_member_operations(
    operations: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], MemberDelta]:
    """Separate a group PATCH into member row deltas and the other operations (pure).

    Handles ``add``/``replace``/``remove`` on ``members``, Entra's remove-with-value
    (``{"op":"Remove","path":"members","value":[{"value":id}]}``), ``members[value eq "id"]``,
    and path-less operations whose value carries ``members``.
    """
    rest: list[dict[str, Any]] = []
    delta = MemberDelta()
    for operation in operations:
        op = str(operation.get("op", "")).lower()
        path = operation.get("path")
        value = operation.get("value")
        if path is None and isinstance(value, dict) and op in ("add", "replace"):
            key = next((k for k in value if k.lower() == "members"), None)
            if key is not None:
                members = _member_ids(value[key])
                if op == "replace":
                    delta.clear, delta.add, delta.remove = True, members, []
                else:
                    delta.add.extend(members)
                remaining = {k: v for k, v in value.items() if k != key}
                if remaining:
                    rest.append({**operation, "value": remaining})
                continue
        if not isinstance(path, str) or not path.strip().lower().startswith("members"):
            rest.append(operation)
            continue
        try:
            node = Path(path.strip()).ast
        except (ValueError, SCIMException) as exc:
            raise InvalidPathException(detail=f"{path!r} is not a valid path") from exc
        if isinstance(node, AttrPath) and node.attr.lower() == "members" and node.sub_attr is None:
            if op == "add":
                delta.add.extend(_member_ids(value))
            elif op == "replace":
                delta.clear, delta.add, delta.remove = True, _member_ids(value or []), []
            elif value is not None:
                delta.remove.extend(_member_ids(value))
            else:
                delta.clear, delta.add, delta.remove = True, [], []
            continue
        if (
            isinstance(node, ValuePath)
            and node.attr_path.attr.lower() == "members"
            and op == "remove"
        ):
            ids = _ids_selected(node.val_filter)
            if ids is not None and node.sub_attr is None:
                delta.remove.extend(ids)
                continue
        raise InvalidPathException(detail=f"unsupported path on members: {path!r}")
    return rest, delta


class Provisioner:
    """Reads and writes of SCIM resources, each write in one transaction with its journal row."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        *,
        clock: Callable[[], datetime] = now_utc,
        rules: Callable[[], RuleSet | None] = lambda: None,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.models = {rt: catalog.model(rt) for rt in ("User", "Group")}
        self.store = ResourceStore(self.models, db.dialect)
        self.clock = clock
        self.projector = Projector(self.store, catalog, rules)

    def _touched(
        self,
        conn: Any,
        record: Record,
        before: dict[str, Any],
        after: dict[str, Any],
        detail: dict[str, Any],
    ) -> list[str]:
        """The members a group write touched: those added or removed, all on a rename."""
        if record.type != "Group" or not self.projector.follows_groups():
            return []
        touched = [*detail.get("added", []), *detail.get("removed", [])]
        if before.get("displayName") != after.get("displayName"):
            touched += [m.value for m in self.store.members_of(conn, [record.id])[record.id]]
        return touched

    def _project(
        self,
        conn: Any,
        record: Record,
        seq: int | None,
        member_ids: list[str],
        created: Resource[Any] | None = None,
    ) -> None:
        """Run the rules for the people this write touched (a group change: its members)."""
        now = self.clock()
        if record.type == "User":
            known = (record, created) if created is not None else None
            self.projector.project(conn, [record.id], now=now, journal_seq=seq, created=known)
        elif member_ids and self.projector.follows_groups():
            self.projector.project(conn, member_ids, now=now, journal_seq=seq)

    # -- reads -----------------------------------------------------------------------------

    def get(
        self,
        resource_type: str,
        resource_id: str,
        *,
        with_members: bool = True,
        inline: bool = False,
    ) -> Record:
        """One resource; ``inline``: on the caller's own connection (see ``is_point_read``)."""
        with self.db.read_inline() if inline else self.db.read() as conn:
            record = self.store.get(conn, resource_type, resource_id)
            if record is None:
                raise NotFoundException(detail=f"{resource_type} {resource_id} not found")
            if with_members:
                self._attach_members(conn, [record])
            return record

    def search(
        self,
        types: list[str],
        node: FilterNode | None,
        *,
        with_members: bool = True,
        inline: bool = False,
        **paging: Any,
    ) -> Page:
        """One page of a list or search; ``inline``: on the caller's own connection (see
        ``is_point_read``)."""
        with self.db.read_inline() if inline else self.db.read() as conn:
            page = self.store.search(conn, types, node, **paging)
            if with_members:
                self._attach_members(conn, page.records)
            return page

    def is_point_read(
        self,
        types: list[str],
        node: FilterNode | None = None,
        *,
        by_id: bool = False,
        with_members: bool = True,
        sort_by: Any = None,
        descending: bool = False,
        start_index: int = 1,
        cursor: str | None = None,
    ) -> bool:
        """Whether a read is a few index reads on the embedded database: a user, or a group
        without its members, ``by_id`` or by a search for ``userName``/``displayName``/
        ``externalId``/``id eq "x"`` (``node``). Cheaper run where it is asked than handed to
        a thread. Never true on PostgreSQL, where a read is a network round trip.
        """
        if not self.db.is_sqlite or len(types) != 1:
            return False
        if types[0] == "Group" and with_members:
            return False  # a group may hold 100k members
        if by_id:
            return True
        if node is None:
            return False
        if cursor or sort_by is not None or descending or start_index > 1:
            return False
        try:
            return self.store.filters[types[0]].point_lookup(node) is not None
        except SCIMException:
            return False

    def _attach_members(self, conn: Any, records: list[Record]) -> None:
        groups = [r.id for r in records if r.type == "Group"]
        users = [r.id for r in records if r.type == "User"]
        found = {}
        if groups:
            found.update(self.store.members_of(conn, groups))
        if users:
            found.update(self.store.groups_of(conn, users))
        for record in records:
            record.members = found.get(record.id, [])

    # -- model <-> document ----------------------------------------------------------------

    def _validate(
        self,
        resource_type: str,
        payload: dict[str, Any],
        context: Context,
        tolerances: list[str] | None,
    ) -> tuple[Resource[Any], list[str]]:
        """Validate a body; attributes no schema defines are dropped and that is journalled."""
        try:
            resource = self.models[resource_type].model_validate(
                payload, scim_ctx=context, scim_policy=TOLERANT_POLICY
            )
        except ValidationError as exc:
            raise scim_exception(exc) from exc
        used = list(tolerances or [])
        if _has_unknown(resource):
            used.append("ignored_unknown_attributes")
        return resource, used

    def _document(self, resource: Resource[Any]) -> dict[str, Any]:
        dumped = resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        return {k: v for k, v in dumped.items() if k not in _NOT_IN_DOC}

    def _load(self, record: Record) -> Resource[Any]:
        payload = {**record.doc, "id": record.id}
        try:
            return self.models[record.type].model_validate(payload, scim_policy=TOLERANT_POLICY)
        except ValidationError as exc:  # a schema edit made a stored document invalid
            raise scim_exception(exc) from exc

    def _fill(self, record: Record, doc: dict[str, Any]) -> None:
        record.doc = doc
        record.external_id = doc.get("externalId")
        if record.type == "User":
            record.name = str(doc.get("userName") or "")
            record.display = doc.get("displayName") or record.name
            active = doc.get("active")
            record.active = active if isinstance(active, bool) else None
        else:
            record.name = str(doc.get("displayName") or "")
            record.display = record.name

    # -- writes ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One write transaction; Bulk runs several operations in it, one savepoint each."""
        with self.db.write() as conn:
            yield conn

    def create(
        self,
        cause: Cause,
        resource_type: str,
        payload: dict[str, Any],
        tolerances: list[str] | None = None,
        *,
        conn: Any = None,
    ) -> Outcome:
        """RFC 7644 §3.3: validate, insert, add members, journal — in one transaction."""
        return self._write(conn, self._creation(cause, resource_type, payload, tolerances))

    async def create_async(
        self,
        cause: Cause,
        resource_type: str,
        payload: dict[str, Any],
        tolerances: list[str] | None = None,
    ) -> Outcome:
        """``create`` for an event loop: validated where it is called, then committed by the
        database's writer (one thread handoff, not two: see ``Database.run_async``)."""
        if resource_type != "User":  # a group may carry thousands of members: off the loop
            return await asyncio.to_thread(self.create, cause, resource_type, payload, tolerances)
        return await self.db.run_async(self._creation(cause, resource_type, payload, tolerances))

    def _creation(
        self,
        cause: Cause,
        resource_type: str,
        payload: dict[str, Any],
        tolerances: list[str] | None,
    ) -> Callable[[Any], Outcome]:
        """Validate a new resource; the write that stores it."""
        resource, tolerances = self._validate(
            resource_type, payload, Context.RESOURCE_CREATION_REQUEST, tolerances
        )
        doc = self._document(resource)
        members = _member_ids(payload.get("members") or []) if resource_type == "Group" else []
        now = self.clock()
        record = Record(
            pk=0,
            id=str(uuid.uuid4()),
            type=resource_type,
            external_id=None,
            name="",
            display=None,
            active=None,
            doc={},
            version=1,
            created=now,
            last_modified=now,
        )
        self._fill(record, doc)
        if not record.name:
            attribute = "userName" if resource_type == "User" else "displayName"
            raise InvalidValueException(detail=f"'{attribute}' is required")

        def work(tx: Any) -> Outcome:
            try:
                self.store.insert(tx, record)
            except UniquenessError as exc:
                raise UniquenessException(detail=f"{exc.attribute} is already taken") from exc
            added = self._add_members(tx, record.id, members) if members else []
            entry = journal.Entry(
                at=now,
                actor=cause.actor,
                request_id=cause.request_id,
                op="create",
                resource_type=resource_type,
                resource_id=record.id,
                after=doc,
                tolerances=list(tolerances or []),
                detail={"added": added} if added else None,
            )
            seq = journal.append(tx, entry)
            self._project(tx, record, seq, added, created=resource)
            listed = self.store.members_of(tx, [record.id])[record.id] if added else None
            return Outcome(record, seq, entry.tolerances, listed)

        return work

    def _write(self, conn: Any, work: Callable[[Any], Outcome]) -> Outcome:
        """Run a write in its own (group-committed) transaction, or in a savepoint of ``conn``."""
        if conn is not None:
            with conn.begin_nested():
                return work(conn)
        return self.db.run(work)

    def _add_members(self, conn: Any, group_id: str, ids: list[str]) -> list[str]:
        unique_ids = list(dict.fromkeys(ids))
        found = self.store.find_ids(conn, unique_ids)
        missing = [member for member in unique_ids if member not in found]
        if missing:
            raise InvalidValueException(detail=f"no such member: {', '.join(missing)}")
        if group_id in found:
            raise InvalidValueException(detail="a group cannot be a member of itself")
        return self.store.add_members(conn, group_id, {m: found[m] for m in unique_ids})

    def _locked(
        self, conn: Any, resource_type: str, resource_id: str, if_match: str | None
    ) -> Record:
        record = self.store.get_for_update(conn, resource_type, resource_id)
        if record is None:
            raise NotFoundException(detail=f"{resource_type} {resource_id} not found")
        check_if_match(record, if_match)
        return record

    def replace(
        self,
        cause: Cause,
        resource_type: str,
        resource_id: str,
        payload: dict[str, Any],
        *,
        if_match: str | None = None,
        tolerances: list[str] | None = None,
        conn: Any = None,
    ) -> Outcome:
        """RFC 7644 §3.5.1: replace the resource; ``members`` of a group replaced as rows."""
        resource, tolerances = self._validate(
            resource_type, payload, Context.RESOURCE_REPLACEMENT_REQUEST, tolerances
        )
        doc = self._document(resource)
        given_id = payload.get("id")
        if isinstance(given_id, str) and given_id and given_id != resource_id:
            raise MutabilityException(detail="'id' is immutable")

        def work(tx: Any) -> Outcome:
            record = self._locked(tx, resource_type, resource_id, if_match)
            before = record.doc
            detail: dict[str, Any] = {}
            if resource_type == "Group" and "members" in {k.lower() for k in payload}:
                key = next(k for k in payload if k.lower() == "members")
                wanted = list(dict.fromkeys(_member_ids(payload[key] or [])))
                current = {m.value for m in self.store.members_of(tx, [record.id])[record.id]}
                removed = self.store.remove_members(tx, record.id, current - set(wanted))
                added = self._add_members(tx, record.id, [m for m in wanted if m not in current])
                detail = {k: v for k, v in (("added", added), ("removed", removed)) if v}
            if record.external_id and doc.get("externalId") is None:
                doc["externalId"] = record.external_id  # Okta's PUT may omit it; keep the link
            changed = doc != before or bool(detail)
            if not changed:
                return Outcome(record, None, list(tolerances or []))
            self._fill(record, doc)
            record.version += 1
            record.last_modified = self.clock()
            try:
                self.store.replace(tx, record)
            except UniquenessError as exc:
                raise UniquenessException(detail=f"{exc.attribute} is already taken") from exc
            seq = journal.append(
                tx,
                journal.Entry(
                    at=record.last_modified,
                    actor=cause.actor,
                    request_id=cause.request_id,
                    op="replace",
                    resource_type=resource_type,
                    resource_id=record.id,
                    before=before,
                    after=doc,
                    tolerances=list(tolerances or []),
                    detail=detail or None,
                ),
            )
            self._project(tx, record, seq, self._touched(tx, record, before, doc, detail))
            return Outcome(record, seq, list(tolerances or []))

        return self._write(conn, work)

    def patch(
        self,
        cause: Cause,
        resource_type: str,
        resource_id: str,
        operations: list[dict[str, Any]],
        *,
        if_match: str | None = None,
        tolerances: list[str] | None = None,
        conn: Any = None,
    ) -> Outcome:
        """RFC 7644 §3.5.2: apply operations with scim2-models; members as row deltas."""
        delta = MemberDelta()
        if resource_type == "Group":
            operations, delta = split_member_operations(operations)
        patch = None
        if operations:
            try:
                patch_model = PatchOp.__class_getitem__(self.models[resource_type])
                patch = patch_model.model_validate(
                    {"schemas": [PATCH_SCHEMA], "Operations": operations},
                    scim_ctx=Context.RESOURCE_PATCH_REQUEST,
                    scim_policy=PATCH_POLICY,
                )
            except ValidationError as exc:
                raise scim_exception(exc) from exc

        def work(tx: Any) -> Outcome:
            used = list(tolerances or [])
            record = self._locked(tx, resource_type, resource_id, if_match)
            before = record.doc
            doc = before
            if patch is not None:
                resource = self._load(record)
                if _creates_on_unmatched_filter(resource, operations):
                    used.append("unmatched_filter_creates")
                try:
                    patch.patch(resource, scim_policy=PATCH_POLICY)
                except ValidationError as exc:
                    raise scim_exception(exc) from exc
                doc = self._document(resource)
            detail: dict[str, Any] = {}
            if delta:
                removed = []
                if delta.clear:
                    removed = self.store.clear_members(tx, record.id)
                removed += self.store.remove_members(tx, record.id, delta.remove)
                added = self._add_members(tx, record.id, delta.add)
                detail = {k: v for k, v in (("added", added), ("removed", removed)) if v}
            if doc == before and not detail:
                return Outcome(record, None, used)
            now = self.clock()
            if doc != before:
                self._fill(record, doc)
                record.version += 1
                record.last_modified = now
                try:
                    self.store.replace(tx, record)
                except UniquenessError as exc:
                    raise UniquenessException(detail=f"{exc.attribute} is already taken") from exc
            else:
                record.version = self.store.touch(tx, record.id, now)
                record.last_modified = now
            seq = journal.append(
                tx,
                journal.Entry(
                    at=now,
                    actor=cause.actor,
                    request_id=cause.request_id,
                    op="patch" if doc != before else "members",
                    resource_type=resource_type,
                    resource_id=record.id,
                    before=before if doc != before else None,
                    after=doc if doc != before else None,
                    tolerances=used,
                    detail=detail or None,
                ),
            )
            self._project(tx, record, seq, self._touched(tx, record, before, doc, detail))
            return Outcome(record, seq, used)

        return self._write(conn, work)

    def delete(
        self,
        cause: Cause,
        resource_type: str,
        resource_id: str,
        *,
        if_match: str | None = None,
        conn: Any = None,
    ) -> Outcome:
        """RFC 7644 §3.6: delete the resource and its memberships; the journal keeps the image."""

        def work(tx: Any) -> Outcome:
            record = self._locked(tx, resource_type, resource_id, if_match)
            memberships = {
                "groups": [m.value for m in self.store.groups_of(tx, [record.id])[record.id]],
            }
            if resource_type == "Group":
                memberships["members"] = [
                    m.value for m in self.store.members_of(tx, [record.id])[record.id]
                ]
            self.store.delete(tx, record)
            seq = journal.append(
                tx,
                journal.Entry(
                    at=self.clock(),
                    actor=cause.actor,
                    request_id=cause.request_id,
                    op="delete",
                    resource_type=resource_type,
                    resource_id=record.id,
                    before=record.doc,
                    detail={k: v for k, v in memberships.items() if v} or None,
                ),
            )
            self._project(tx, record, seq, memberships.get("members", []))
            return Outcome(record, seq)

        return self._write(conn, work)
