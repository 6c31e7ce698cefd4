"""Nightly HR exports (``bridge sync``): a feed's full export, streamed, diffed against the
people the feed owns, and applied through the Provisioner (journal, rules, outbox) like a
SCIM write, under the cause ``sync:{feed}``.

Two passes over the export, never loaded whole. The survey maps every row
(``to_scim_user``), hashes what the feed maps and classifies it: unchanged (the hash of the
last sync: no write), create (no stored user holds the externalId), update; people the feed
owns that the export no longer lists are deactivated (``active`` false, never deleted). The
truncation guard decides on the survey's counts, before anything is written. The apply pass
reads the export again and writes the changes 500 to a transaction, so a 100,000-person
export never holds one giant transaction. CSV parsing is the standard library's.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from collections.abc import Container
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import TextIO

from scim2_models import SCIMException

from bridge.provision.resources import Cause
from bridge.provision.resources import Provisioner
from bridge.rules.feeds import ATTRIBUTES
from bridge.rules.feeds import SOURCES
from bridge.rules.feeds import USER
from bridge.rules.feeds import ExportSpec
from bridge.rules.feeds import Feed
from bridge.rules.feeds import RecordError
from bridge.rules.feeds import record_value
from bridge.rules.feeds import to_scim_user
from bridge.store import feed_people
from bridge.store import runs

log = logging.getLogger("bridge.sync")

FORMAT = "bridge-sync/1"
BATCH = 500
"""Changes written per transaction."""
EXAMPLES = 5
"""Example people shown per kind of change."""
MAX_LISTED = 100
"""Rejected or failed rows listed (all are counted)."""
KINDS = ("create", "update", "deactivate", "unchanged", "rejected", "failed")

Opener = Callable[[], AbstractContextManager[TextIO]]
"""Opens the export again from its start (each pass streams it once)."""


def worker() -> str:
    """This process, as a running sync records it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def abandon_dead(db: Any) -> list[str]:
    """Close as failed the syncs left ``running`` by a process of this host that is gone (a
    crash or kill mid-apply: what it wrote stays; the export must be synced again); the ids
    closed. A run of another host is left: its process cannot be seen from here."""
    host = socket.gethostname()
    closed = []
    with db.read() as conn:
        running = runs.of_status(conn, kind=feed_people.KIND, status="running")
    for run in running:
        summary = run.get("summary") or {}
        name, _, pid = str(summary.get("worker") or "").rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        note = (
            f"abandoned: the process applying it ({summary['worker']}) stopped before the end; "
            "what it wrote stays, sync the export again to finish"
        )
        if db.run(
            lambda tx, run=run, summary=summary, note=note: runs.settle(
                tx,
                run["id"],
                status="failed",
                summary={**summary, "error": note},
                expected="running",
            )
        ):
            log.error("sync run %s of feed %s %s", run["id"], summary.get("feed"), note)
            closed.append(str(run["id"]))
    return closed


def opener(path: Path) -> Opener:
    """Each pass opens the export file again (UTF-8, a byte-order mark skipped)."""

    def open_export() -> AbstractContextManager[TextIO]:
        return path.open(encoding="utf-8-sig", newline="")

    return open_export


Progress = Callable[[str, int, int | None], None]
"""Told ``(phase, done, total or None)`` as a pass advances."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """An export row that cannot be applied: where it is, which field, what to fix in the HRIS."""

    line: int
    field: str
    fix: str
    external_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "field": self.field,
            "fix": self.fix,
            "external_id": self.external_id,
        }


@dataclass(slots=True)
class Change:
    """A create or an update the export asks for: the row it is on and the hash it brings."""

    kind: str
    line: int
    content_hash: str
    resource_id: str | None = None
    reactivate: bool = False


@dataclass
class Survey:
    """What an export would change, and whether the truncation guard accepts it."""

    feed: Feed
    rows: int = 0
    people: int = 0
    changes: dict[str, Change] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    deactivate: list[tuple[str, str]] = field(default_factory=list)
    """``(externalId, resource id)`` of owned people the export no longer lists."""
    inactive: list[str] = field(default_factory=list)
    """Owned people missing from the export who are inactive already (marked, not written)."""
    gone: list[str] = field(default_factory=list)
    """Owned people whose user was deleted meanwhile (forgotten)."""
    rejected: list[Rejected] = field(default_factory=list)
    rejected_count: int = 0
    baseline: int | None = None
    """How many people the last accepted export of the feed listed (None: first sync)."""
    refusal: str | None = None

    def counts(self) -> dict[str, int]:
        kinds = [c.kind for c in self.changes.values()]
        return {
            "create": kinds.count("create"),
            "update": kinds.count("update"),
            "deactivate": len(self.deactivate),
            "unchanged": len(self.unchanged) + len(self.inactive),
            "rejected": self.rejected_count,
        }

    def examples(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {"create": [], "update": [], "deactivate": []}
        for external_id, change in self.changes.items():
            listed = found[change.kind]
            if len(listed) < EXAMPLES:
                listed.append(external_id)
        found["deactivate"] = [e for e, _ in self.deactivate[:EXAMPLES]]
        return found

    def reject(self, rejected: Rejected) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_LISTED:
            self.rejected.append(rejected)


@dataclass
class Applied:
    """What the apply pass wrote: counts by kind (an update found equal once merged is
    unchanged), the rows that failed (a SCIM validation or uniqueness refusal), the run."""

    run_id: str
    counts: dict[str, int]
    failed: list[Rejected] = field(default_factory=list)


# -- reading an export (streamed) -----------------------------------------------------------


def records(stream: TextIO, spec: ExportSpec) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Each row of an export with its line number: the record, or why it is not one (a JSON
    line that does not parse). CSV has a header row; its line numbers are the file's."""
    if spec.format == "jsonl":
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"not JSON ({exc.msg}): export one JSON object per line"
                continue
            if isinstance(value, dict):
                yield number, value
            else:
                yield number, "not a JSON object: export one JSON object per line"
        return
    reader = csv.DictReader(stream, delimiter=spec.delimiter)
    for row in reader:
        row.pop(None, None)  # cells past the header: nothing maps them
        yield reader.line_num, row


def content_hash(user: dict[str, Any]) -> str:
    """The hash of what a feed mapped for one person (key order does not matter)."""
    text = json.dumps(user, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def rejection(line: int, exc: RecordError, external_id: str | None) -> Rejected:
    """A RecordError (``field: what is wrong and the fix``) as a rejected row."""
    name, _, fix = str(exc).partition(": ")
    return Rejected(line, name, fix or str(exc), external_id)


def _external_sources(feed: Feed) -> list[str]:
    """The fields of an HR record the feed takes the externalId from (first found wins)."""
    item = next(m for m in feed.mapping if m.attribute == "externalId")
    return item.source.split(SOURCES) if item.source else [item.attribute]


def _external_id(record: dict[str, Any], sources: list[str]) -> str | None:
    """The raw externalId of a record a mapping refused (to name the person in the report)."""
    for source in sources:
        found = record_value(record, source)
        if found is not None:
            return str(found)
    return None


def mapped_rows(
    feed: Feed, stream: TextIO, only: Container[int] | None = None
) -> Iterator[tuple[int, dict[str, Any] | None, Rejected | None]]:
    """Each row as ``(line, SCIM user, None)`` or ``(line, None, why it is rejected)``;
    with ``only``, the rows on those lines only (the others are not mapped)."""
    sources = _external_sources(feed)
    for line, record in records(stream, feed.export):
        if only is not None and line not in only:
            continue
        if isinstance(record, str):
            yield line, None, Rejected(line, "(row)", record)
            continue
        try:
            yield line, to_scim_user(feed, record), None
        except RecordError as exc:
            yield line, None, rejection(line, exc, _external_id(record, sources))


def survey(
    feed: Feed,
    stream: TextIO,
    owned: dict[str, feed_people.Owned],
    progress: Progress | None = None,
) -> Survey:
    """The first pass (pure over the stream and the owned people): every row mapped, hashed
    and classified unchanged or changed (create vs update is decided against the store
    next); owned people missing from the export listed for deactivation."""
    found = Survey(feed)
    lines: dict[str, int] = {}
    source = _external_sources(feed)[0]
    for line, user, rejected in mapped_rows(feed, stream):
        found.rows += 1
        if progress is not None and found.rows % 1000 == 0:
            progress("read", found.rows, None)
        if rejected is not None:
            found.reject(rejected)
            continue
        assert user is not None
        external_id = str(user["externalId"])
        if external_id in lines:
            found.reject(
                Rejected(
                    line,
                    source,
                    f"{external_id} is also on line {lines[external_id]}: "
                    "one row per person in the export",
                    external_id,
                )
            )
            continue
        lines[external_id] = line
        found.people += 1
        digest = content_hash(user)
        mine = owned.get(external_id)
        if mine is not None and not mine.deactivated and mine.content_hash == digest:
            found.unchanged.append(external_id)
            continue
        reactivate = mine is not None and mine.deactivated
        found.changes[external_id] = Change("update", line, digest, reactivate=reactivate)
    for external_id, mine in owned.items():
        if external_id not in lines and not mine.deactivated:
            found.deactivate.append((external_id, mine.resource_id))
    return found


def guard(found: Survey, *, force: bool) -> str | None:
    """Why the export is refused as empty or truncated (None: accepted), with the counts and
    how to override; ``force`` accepts it after a person has checked the export."""
    if force:
        return None
    override = "check the export, then run again with --force to accept it"
    if found.people == 0:
        rejected = f" ({found.rejected_count} row(s) rejected)" if found.rejected_count else ""
        return f"the export lists nobody{rejected}: refused, nothing written; {override}"
    minimum = found.feed.export.min_percent
    if found.baseline and found.people * 100 < found.baseline * minimum:
        share = found.people * 100 / found.baseline
        return (
            f"the export lists {found.people} people, {share:.1f} % of the last accepted "
            f"export's {found.baseline} (feed {found.feed.name} refuses under {minimum:g} %): "
            f"refused as truncated, nothing written; {override}"
        )
    return None


# -- merging what the feed maps into a stored user (pure) ----------------------------------


def _remove(holder: dict[str, Any], path: tuple[str, ...]) -> None:
    for key in path[:-1]:
        inner = holder.get(key)
        if not isinstance(inner, dict):
            return
        holder = inner
    holder.pop(path[-1], None)


def _get(holder: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = holder
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def merge(doc: dict[str, Any], user: dict[str, Any], feed: Feed) -> dict[str, Any]:
    """A stored user with the attributes the feed maps taken from ``user`` (set, or removed
    when the row leaves them empty); every other attribute kept as it is. The work email
    replaces the work entry of ``emails`` only."""
    merged = copy.deepcopy(doc)
    for item in feed.mapping:
        schema, path = ATTRIBUTES[item.attribute]
        source = user if schema is None else user.get(schema) or {}
        value = _get(source, path)
        if item.attribute == "emails.work":
            others = [e for e in merged.get("emails") or [] if e.get("type") != "work"]
            emails = [*(value or []), *others]
            if emails:
                merged["emails"] = emails
            else:
                merged.pop("emails", None)
            continue
        holder = merged if schema is None else merged.setdefault(schema, {})
        if value is None:
            _remove(holder, path)
        else:
            for key in path[:-1]:
                holder = holder.setdefault(key, {})
            holder[path[-1]] = value
    for key in list(merged):
        if isinstance(merged[key], dict) and not merged[key]:
            del merged[key]  # an emptied extension or complex attribute
    schemas = [USER, *(s for s in merged.get("schemas", []) if s != USER)]
    schemas += [k for k in merged if k.startswith("urn:") and k not in schemas]
    merged["schemas"] = schemas
    return merged


# -- the shell: survey against the store, then apply through the Provisioner -----------------


class Sync:
    """One feed's export against one database: ``survey`` (reads only), ``apply`` (writes)."""

    def __init__(
        self, provisioner: Provisioner, feed: Feed, *, actor: str, rules_version: str
    ) -> None:
        self.provisioner = provisioner
        self.db = provisioner.db
        self.feed = feed
        self.actor = actor
        self.rules_version = rules_version

    def survey(self, opener: Opener, *, force: bool, progress: Progress | None = None) -> Survey:
        """The first pass and the truncation guard: what the export would change."""
        with self.db.read() as conn:
            owned = feed_people.owned(conn, self.feed.name)
            last = feed_people.last_accepted(conn, self.feed.name)
        with opener() as stream:
            found = survey(self.feed, stream, owned, progress)
        found.baseline = int(last["people"]) if last and "people" in last else None
        found.refusal = guard(found, force=force)
        if found.refusal is not None:
            return found
        with self.db.read() as conn:
            stored = feed_people.users_by_external_id(conn, list(found.changes))
            missing = feed_people.users_by_id(conn, [r for _, r in found.deactivate])
        for external_id, change in found.changes.items():
            user = stored.get(external_id)
            if user is None:
                change.kind, change.reactivate = "create", False
            else:
                change.resource_id = user.resource_id
        still = []
        for external_id, resource_id in found.deactivate:
            user = missing.get(resource_id)
            if user is None:
                found.gone.append(external_id)
            elif user.active is False:
                found.inactive.append(external_id)
            else:
                still.append((external_id, resource_id))
        found.deactivate = still
        return found

    def apply(self, found: Survey, opener: Opener, progress: Progress | None = None) -> Applied:
        """Write the survey's changes (re-reading the export for the rows that changed), a
        batch per transaction, and record the run (kind ``sync``) for ``bridge runs``."""
        run_id = uuid.uuid4().hex[:12]
        cause = Cause(f"sync:{self.feed.name}", run_id)
        counts = {kind: 0 for kind in KINDS}
        counts["rejected"] = found.rejected_count
        failed: list[Rejected] = []
        total = len(found.changes) + len(found.deactivate)
        done = 0
        abandon_dead(self.db)
        summary = {
            "feed": self.feed.name,
            "people": found.people,
            "rows": found.rows,
            "worker": worker(),
        }
        self.db.run(
            lambda tx: runs.create(
                tx,
                run_id,
                kind=feed_people.KIND,
                status="running",
                rules_version=self.rules_version,
                summary={**summary, "planned": found.counts()},
                now=self.provisioner.clock(),
                actor=self.actor,
            )
        )

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress("apply", done, total)

        try:
            self._changes(found, opener, cause, counts, failed, advance)
            for start in range(0, len(found.deactivate), BATCH):
                chunk = found.deactivate[start : start + BATCH]
                self._deactivate(chunk, cause, counts, failed)
                advance(len(chunk))
            counts["unchanged"] += len(found.unchanged) + len(found.inactive)
            self._mark(found, run_id)
        except BaseException as exc:  # the batches committed stay: say where it stopped
            stopped = {**summary, **counts, "actor": self.actor, "error": repr(exc)[:500]}
            self.db.run(
                lambda tx: runs.settle(
                    tx, run_id, status="failed", summary=stopped, expected="running"
                )
            )
            raise
        final = {
            **summary,
            **counts,
            "actor": self.actor,
            "rejected_rows": [r.to_json() for r in found.rejected],
            "failed_rows": [r.to_json() for r in failed[:MAX_LISTED]],
            "deactivated": [external_id for external_id, _ in found.deactivate[:MAX_LISTED]],
        }
        self.db.run(
            lambda tx: runs.settle(tx, run_id, status="applied", summary=final, expected="running")
        )
        return Applied(run_id, counts, failed)

    def _changes(
        self,
        found: Survey,
        opener: Opener,
        cause: Cause,
        counts: dict[str, int],
        failed: list[Rejected],
        advance: Callable[[int], None],
    ) -> None:
        """The creates and updates, read again from the export (only their rows are mapped)."""
        if not found.changes:
            return
        batch: list[tuple[str, Change, dict[str, Any]]] = []
        lines = {change.line for change in found.changes.values()}
        with opener() as stream:
            for line, user, _ in mapped_rows(self.feed, stream, lines):
                change = found.changes.get(str(user["externalId"])) if user else None
                if user is None or change is None or change.line != line:
                    continue  # the export changed between the passes: left for next time
                batch.append((str(user["externalId"]), change, user))
                if len(batch) >= BATCH:
                    self._write(batch, cause, counts, failed)
                    advance(len(batch))
                    batch = []
        if batch:
            self._write(batch, cause, counts, failed)
            advance(len(batch))

    def _fail(self, counts: dict[str, int], failed: list[Rejected], rejected: Rejected) -> None:
        counts["failed"] += 1
        if len(failed) < MAX_LISTED:
            failed.append(rejected)

    def _write(
        self,
        batch: list[tuple[str, Change, dict[str, Any]]],
        cause: Cause,
        counts: dict[str, int],
        failed: list[Rejected],
    ) -> None:
        """One transaction: each create or update in a savepoint of its own (a refused one
        rolls back alone and is reported), then the feed's ownership of the people written."""
        provisioner = self.provisioner
        maps_active = any(m.attribute == "active" for m in self.feed.mapping)
        with provisioner.transaction() as tx:
            kept: list[tuple[str, str, str | None]] = []
            for external_id, change, user in batch:
                try:
                    if change.kind == "create":
                        payload = user if maps_active else {**user, "active": True}
                        outcome = provisioner.create(cause, "User", payload, conn=tx)
                        counts["create"] += 1
                    else:
                        assert change.resource_id is not None
                        record = provisioner.store.get(tx, "User", change.resource_id)
                        if record is None:
                            raise SCIMException(detail="deleted while the export was read")
                        merged = merge(record.doc, user, self.feed)
                        if change.reactivate and not maps_active:
                            merged["active"] = True
                        outcome = provisioner.replace(
                            cause, "User", change.resource_id, merged, conn=tx
                        )
                        counts["update" if outcome.seq is not None else "unchanged"] += 1
                except SCIMException as exc:
                    reason = exc.detail or type(exc).__name__
                    self._fail(
                        counts, failed, Rejected(change.line, "(person)", reason, external_id)
                    )
                    continue
                kept.append((external_id, outcome.record.id, change.content_hash))
            feed_people.keep(
                tx, self.feed.name, kept, run_id=cause.request_id or "", now=provisioner.clock()
            )

    def _deactivate(
        self,
        chunk: list[tuple[str, str]],
        cause: Cause,
        counts: dict[str, int],
        failed: list[Rejected],
    ) -> None:
        """One transaction: owned people missing from the export set ``active`` false."""
        provisioner = self.provisioner
        operations = [{"op": "replace", "path": "active", "value": False}]
        with provisioner.transaction() as tx:
            done = []
            for external_id, resource_id in chunk:
                try:
                    provisioner.patch(cause, "User", resource_id, operations, conn=tx)
                except SCIMException as exc:
                    reason = exc.detail or type(exc).__name__
                    self._fail(counts, failed, Rejected(0, "(person)", reason, external_id))
                    continue
                counts["deactivate"] += 1
                done.append(external_id)
            feed_people.deactivated(
                tx, self.feed.name, done, run_id=cause.request_id or "", now=provisioner.clock()
            )

    def _mark(self, found: Survey, run_id: str) -> None:
        """The unchanged people seen by this run (10 batches a transaction: a cheap UPDATE),
        the already-inactive ones marked, the vanished ones forgotten."""
        now = self.provisioner.clock()
        step = BATCH * 10
        for start in range(0, len(found.unchanged), step):
            with self.db.write() as tx:
                chunk = found.unchanged[start : start + step]
                feed_people.seen(tx, self.feed.name, chunk, run_id=run_id)
        with self.db.write() as tx:
            feed_people.deactivated(tx, self.feed.name, found.inactive, run_id=run_id, now=now)
            feed_people.forget(tx, self.feed.name, found.gone)
