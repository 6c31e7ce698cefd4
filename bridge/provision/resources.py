"""The Provisioner: the SCIM surface's use cases — each write one transaction that applies the
change, journals it and projects the rules onto the people it touched (DESIGN §2). Its reads
are ``Reader``'s; documents, PATCH, members and preconditions have modules of their own.

A write refused because another record holds its externalId or userName (409 ``uniqueness``)
is kept (``bridge.store.refusals``) once the refused transaction has rolled back, so that the
duplicate is reported (``bridge plan``, ``bridge quality``) instead of forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any

from scim2_models import Context
from scim2_models import InvalidValueException
from scim2_models import MutabilityException
from scim2_models import NotFoundException
from scim2_models import Resource
from scim2_models import UniquenessException

from bridge.provision import documents
from bridge.provision import membership
from bridge.provision import patching
from bridge.provision.membership import MemberDelta
from bridge.provision.membership import split_member_operations
from bridge.provision.preconditions import check_if_match
from bridge.provision.projection import Projector
from bridge.provision.reader import Reader
from bridge.rules.model import RuleSet
from bridge.schemas import Catalog
from bridge.store import journal
from bridge.store import refusals
from bridge.store.engine import Database
from bridge.store.resources import Member
from bridge.store.resources import Record
from bridge.store.resources import ResourceStore
from bridge.store.resources import UniquenessError

log = logging.getLogger("bridge.provision")


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


class DuplicateRefused(UniquenessException):
    """409 ``uniqueness`` (RFC 7644 §3.3) with what was refused, kept after the rollback."""

    def __init__(self, detail: str, refused: refusals.Refused) -> None:
        super().__init__(detail=detail)
        self.refused = refused


class Provisioner(Reader):
    """Reads and writes of SCIM resources, each write in one transaction with its journal row."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        *,
        clock: Callable[[], datetime] = now_utc,
        rules: Callable[[], RuleSet | None] = lambda: None,
        username_policy: str = "exact",
        cursor_secret: str | None = None,
    ) -> None:
        self.catalog = catalog
        self.models = {rt: catalog.model(rt) for rt in ("User", "Group")}
        store = ResourceStore(
            self.models, db.dialect, username_policy=username_policy, cursor_secret=cursor_secret
        )
        super().__init__(db, store)
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

    # -- writes ----------------------------------------------------------------------------

    def _refusal(
        self,
        cause: Cause,
        op: str,
        record: Record,
        exc: UniquenessError,
        resource_id: str | None = None,
    ) -> UniquenessException:
        """The 409 for a write whose identifier another record holds (what to keep of it)."""
        detail = f"{exc.attribute} is already taken"
        value = record.external_id if exc.attribute == "externalId" else record.name
        if exc.attribute not in refusals.ATTRIBUTES or not value:
            return UniquenessException(detail=detail)
        return DuplicateRefused(
            detail,
            refusals.Refused(
                resource_type=record.type,
                attribute=exc.attribute,
                value=value,
                user_name=record.name,
                external_id=record.external_id,
                resource_id=resource_id,
                op=op,
                actor=cause.actor,
                request_id=cause.request_id,
                at=self.clock(),
            ),
        )

    def _keep(self, refused: DuplicateRefused, conn: Any = None) -> None:
        """Keep a refusal after the refused write rolled back (it is never half-written): a
        short write of its own, or a savepoint of the Bulk transaction the write ran in.
        Failing to keep it leaves the 409 as it is (the client's answer), and is logged."""
        try:
            if conn is not None:
                with conn.begin_nested():
                    refusals.record(conn, refused.refused)
            else:
                self.db.run(lambda tx: refusals.record(tx, refused.refused))
        except Exception:
            log.exception(
                "could not keep the refusal of %s %s %s",
                refused.refused.resource_type,
                refused.refused.attribute,
                refused.refused.value,
                extra={"request_id": refused.refused.request_id},
            )

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
        work = self._creation(cause, resource_type, payload, tolerances)
        try:
            return await self.db.run_async(work)
        except DuplicateRefused as exc:
            await asyncio.to_thread(self._keep, exc)
            raise

    def _creation(
        self,
        cause: Cause,
        resource_type: str,
        payload: dict[str, Any],
        tolerances: list[str] | None,
    ) -> Callable[[Any], Outcome]:
        """Validate a new resource; the write that stores it."""
        resource, tolerances = documents.validate(
            self.models[resource_type], payload, Context.RESOURCE_CREATION_REQUEST, tolerances
        )
        doc = documents.document(resource)
        members = (
            membership.member_ids(payload.get("members") or []) if resource_type == "Group" else []
        )
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
        _fill_named(record, doc)

        def work(tx: Any) -> Outcome:
            try:
                self.store.insert(tx, record)
            except UniquenessError as exc:
                raise self._refusal(cause, "create", record, exc) from exc
            added = membership.add_members(self.store, tx, record.id, members) if members else []
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
        """Run a write in its own (group-committed) transaction, or in a savepoint of ``conn``;
        a refused duplicate is kept once the write has rolled back."""
        if conn is not None:
            try:
                with conn.begin_nested():
                    return work(conn)
            except DuplicateRefused as exc:
                self._keep(exc, conn)
                raise
        try:
            return self.db.run(work)
        except DuplicateRefused as exc:
            self._keep(exc)
            raise

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
        resource, tolerances = documents.validate(
            self.models[resource_type], payload, Context.RESOURCE_REPLACEMENT_REQUEST, tolerances
        )
        doc = documents.document(resource)
        given_id = payload.get("id")
        if isinstance(given_id, str) and given_id and given_id != resource_id:
            raise MutabilityException(detail="'id' is immutable")

        def work(tx: Any) -> Outcome:
            record = self._locked(tx, resource_type, resource_id, if_match)
            before = record.doc
            detail: dict[str, Any] = {}
            if resource_type == "Group" and "members" in {k.lower() for k in payload}:
                key = next(k for k in payload if k.lower() == "members")
                detail = membership.replace_members(self.store, tx, record.id, payload[key])
            if record.external_id and doc.get("externalId") is None:
                doc["externalId"] = record.external_id  # Okta's PUT may omit it; keep the link
            changed = doc != before or bool(detail)
            if not changed:
                return Outcome(record, None, list(tolerances or []))
            _fill_named(record, doc)
            record.version += 1
            record.last_modified = self.clock()
            try:
                self.store.replace(tx, record)
            except UniquenessError as exc:
                raise self._refusal(cause, "replace", record, exc, record.id) from exc
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
        patch = patching.patch_op(self.models[resource_type], operations) if operations else None

        def work(tx: Any) -> Outcome:
            used = list(tolerances or [])
            record = self._locked(tx, resource_type, resource_id, if_match)
            before = record.doc
            doc = before
            if patch is not None:
                resource = documents.load(self.models[record.type], record)
                used += patching.apply(patch, resource, operations)
                doc = documents.document(resource)
            detail: dict[str, Any] = {}
            if delta:
                detail = membership.apply_delta(self.store, tx, record.id, delta)
            if doc == before and not detail:
                return Outcome(record, None, used)
            now = self.clock()
            if doc != before:
                _fill_named(record, doc)
                record.version += 1
                record.last_modified = now
                try:
                    self.store.replace(tx, record)
                except UniquenessError as exc:
                    raise self._refusal(cause, "patch", record, exc, record.id) from exc
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


def _fill_named(record: Record, doc: dict[str, Any]) -> None:
    """Fill ``record`` from ``doc``; a userName or group displayName left empty (by a POST,
    PUT or a PATCH replace with "") is refused: RFC 7643 requires it."""
    documents.fill(record, doc)
    if not record.name:
        attribute = "userName" if record.type == "User" else "displayName"
        raise InvalidValueException(detail=f"'{attribute}' is required and cannot be empty")
