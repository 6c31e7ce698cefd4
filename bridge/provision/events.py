"""Applying queued HR webhook events through the Provisioner (DESIGN §2): each event one
transaction that writes the person (journal, rules, outbox) and finishes the event's row.

``user.create`` / ``user.update`` upsert the SCIM User keyed by externalId with the attributes
the feed maps (attributes it does not map are kept); ``user.terminate`` deactivates (never
deletes) with employmentStatus ``terminated``; ``user.rehire`` reactivates. An event older
than the person's last applied one is journalled and ignored; a record the feed's mapping
refuses fails with the field named. The event id is the cause: actor ``hris:{feed}``,
request id the event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any
from typing import Protocol

from scim2_models import SCIMException

from bridge.provision.resources import Cause
from bridge.provision.resources import Provisioner
from bridge.provision.resources import now_utc
from bridge.rules.feeds import HR
from bridge.rules.feeds import USER
from bridge.rules.feeds import Feed
from bridge.rules.feeds import RecordError
from bridge.rules.feeds import to_scim_user
from bridge.store import journal
from bridge.store import webhook_events
from bridge.store.webhook_events import Event
from bridge.targets.hris_fetch import FetchError

log = logging.getLogger("bridge.hris")

CREATE, UPDATE, TERMINATE, REHIRE = "user.create", "user.update", "user.terminate", "user.rehire"
EVENT_TYPES = (CREATE, UPDATE, TERMINATE, REHIRE)
POLL_SECONDS = 1.0
MAX_ATTEMPTS = 8
"""Fetches of a thin event's record before it fails (about 2 h of an HRIS outage)."""


class Fetch(Protocol):
    """Where a thin event's record comes from (``bridge.targets.hris_fetch.HrisFetcher``)."""

    async def fetch(self, feed: Feed, external_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Verdict:
    """What became of one event: its final state, why, and the journal seq it wrote."""

    state: str
    detail: str | None = None
    seq: int | None = None


# -- the functional core ------------------------------------------------------------------------


def external_id_of(feed: Feed, data: Mapping[str, Any]) -> str | None:
    """The person an event's ``data`` names: the feed's externalId mapping applied to it, or
    the guide's ``externalId`` key of a thin event."""
    source = next((m for m in feed.mapping if m.attribute == "externalId"), None)
    if source is not None:
        try:
            value = to_scim_user(_only(feed, "externalId"), data).get("externalId")
        except RecordError:
            value = None
        if value not in (None, ""):
            return str(value)
    fallback = data.get("externalId")
    return str(fallback) if isinstance(fallback, str | int) and fallback != "" else None


def _only(feed: Feed, attribute: str) -> Feed:
    return dataclasses.replace(
        feed, mapping=tuple(m for m in feed.mapping if m.attribute == attribute)
    )


def is_thin(feed: Feed, data: Mapping[str, Any]) -> bool:
    """An event that names its person and nothing else (the record is fetched)."""
    keys = {"externalId"} | {
        str(m.source) for m in feed.mapping if m.attribute == "externalId" and m.source
    }
    return not (set(data) - keys)


def merged(current: Mapping[str, Any], mapped: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with what a feed mapped laid over it: nested objects merged key by key,
    the work email replacing the work email only, other values replaced, schemas united."""
    out = dict(current)
    for key, value in mapped.items():
        if key == "schemas":
            out[key] = list(dict.fromkeys([*current.get("schemas", []), *value]))
        elif key == "emails" and isinstance(value, list):
            others = [e for e in current.get("emails") or [] if e.get("type") != "work"]
            out[key] = [*value, *others]
        elif isinstance(value, dict) and isinstance(current.get(key), dict):
            out[key] = merged(current[key], value)
        else:
            out[key] = value
    return out


def with_status(event_type: str, user: Mapping[str, Any]) -> dict[str, Any]:
    """The user an event asks for: a termination inactive and ``terminated``, a rehire (and a
    new hire) active; a status the record maps itself is kept unless it contradicts."""
    out = dict(user)
    out.setdefault("schemas", [USER])
    if event_type == TERMINATE:
        out["active"] = False
        status = "terminated"
    elif event_type == REHIRE:
        out["active"] = True
        current = (out.get(HR) or {}).get("employmentStatus")
        status = current if current and current != "terminated" else "active"
    else:
        return out
    out[HR] = {**(out.get(HR) or {}), "employmentStatus": status}
    if HR not in out["schemas"]:
        out["schemas"] = [*out["schemas"], HR]
    return out


def retry_delay(attempt: int) -> timedelta:
    """How long a thin event waits after its ``attempt``-th failed fetch: 30 s, doubling,
    at most 1 h."""
    return timedelta(seconds=min(30 * 2 ** (attempt - 1), 3600))


def fix_of(problem: str) -> str:
    """The fix a log line and ``detail`` suggest for a failed event."""
    if re.match(r"^\S+: missing", problem):
        return "fill the field in the HRIS for this person; the next event for them applies"
    return "correct the record in the HRIS; the next event for this person applies"


# -- the shell ----------------------------------------------------------------------------------


class EventApplier:
    """The loop ``bridge serve`` runs beside the relay: queued events, oldest event time first,
    each applied through the Provisioner in one transaction with its row's new state."""

    def __init__(
        self,
        provisioner: Provisioner,
        feeds: Callable[[], Mapping[str, Feed]],
        *,
        fetcher: Fetch | None = None,
        clock: Callable[[], datetime] = now_utc,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.provisioner = provisioner
        self.db = provisioner.db
        self.feeds = feeds
        self.fetcher = fetcher
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """An event was queued: look now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Apply events until ``stop`` is set."""
        while not stop.is_set():
            try:
                worked = await self.apply_next()
            except Exception:
                log.exception("applying an HR event failed; retrying at the next poll")
                worked = False
            if worked:
                continue
            self._wake.clear()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED), self.poll_seconds
                )
            for waiting in waits:
                waiting.cancel()

    async def drain(self) -> int:
        """Apply every queued event; how many were taken."""
        taken = 0
        while await self.apply_next():
            taken += 1
        return taken

    async def apply_next(self) -> bool:
        """Apply the queued event with the oldest event time; False when none is queued."""
        event = await asyncio.to_thread(self._next)
        if event is None:
            return False
        feed = self.feeds().get(event.feed)
        data = event.payload.get("data")
        record: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
        problem = None
        if feed is None:
            problem = f"feed {event.feed!r} is no longer declared in feeds.yaml"
        elif self._needs_fetch(feed, event, record):
            assert self.fetcher is not None  # _needs_fetch checked it
            try:
                record = {**await self.fetcher.fetch(feed, event.external_id), **record}
            except FetchError as exc:
                problem = f"the record could not be fetched from the HRIS: {exc}"
                if exc.retryable and event.attempts + 1 < MAX_ATTEMPTS:
                    await asyncio.to_thread(self._postpone, event, problem)
                    return True
        verdict = await asyncio.to_thread(self._apply, event, feed, record, problem)
        if verdict is not None:
            self._log(event, verdict)
        return True

    def _needs_fetch(self, feed: Feed, event: Event, record: Mapping[str, Any]) -> bool:
        return (
            event.event_type != TERMINATE
            and feed.fetch_url is not None
            and self.fetcher is not None
            and is_thin(feed, record)
        )

    def _next(self) -> Event | None:
        with self.db.read() as conn:
            return webhook_events.next_queued(conn, self.clock())

    def _postpone(self, event: Event, problem: str) -> None:
        until = self.clock() + retry_delay(event.attempts + 1)
        self.db.run(lambda tx: webhook_events.postpone(tx, event.id, until=until, detail=problem))
        log.warning(
            "HR event %s of feed %s held back until %s: %s",
            event.event_id,
            event.feed,
            until.isoformat(),
            problem,
            extra={"request_id": event.event_id},
        )

    def _apply(
        self, event: Event, feed: Feed | None, record: dict[str, Any], problem: str | None
    ) -> Verdict | None:
        """One transaction: claim the event, write the person, finish the event's row."""
        with self.provisioner.transaction() as tx:
            if not webhook_events.claim(tx, event.id):
                return None  # another process finished it
            if feed is None or problem is not None:
                verdict = self._refuse(tx, event, None, webhook_events.FAILED, str(problem))
            else:
                verdict = self._write(tx, event, feed, record)
            webhook_events.finish(
                tx,
                event.id,
                state=verdict.state,
                now=self.clock(),
                detail=verdict.detail,
                journal_seq=verdict.seq,
            )
            return verdict

    def _write(self, tx: Any, event: Event, feed: Feed, record: dict[str, Any]) -> Verdict:
        person = webhook_events.person_with(tx, event.external_id)
        last = webhook_events.last_applied(tx, event.feed, event.external_id)
        if last is not None and event.occurred < last:
            reason = (
                f"older than the last applied event of {event.external_id} "
                f"({event.occurred.isoformat()} < {last.isoformat()})"
            )
            return self._refuse(tx, event, person, webhook_events.IGNORED, reason)
        if person is None and event.event_type == TERMINATE:
            reason = f"no person with externalId {event.external_id} to terminate"
            return self._refuse(tx, event, None, webhook_events.IGNORED, reason)
        try:
            mapped = to_scim_user(feed, record)
        except RecordError as exc:
            if person is None or event.event_type not in (TERMINATE, REHIRE):
                return self._refuse(tx, event, person, webhook_events.FAILED, str(exc))
            mapped = {"schemas": [USER]}  # a status change needs no full record
        mapped.setdefault("externalId", event.external_id)
        cause = Cause(f"hris:{event.feed}", event.event_id)
        try:
            if person is None:
                user = with_status(event.event_type, mapped)
                user.setdefault("active", True)
                outcome = self.provisioner.create(cause, "User", user, conn=tx)
            else:
                current = self.provisioner.store.get(tx, "User", person)
                doc = merged(current.doc if current is not None else {}, mapped)
                user = with_status(event.event_type, doc)
                outcome = self.provisioner.replace(cause, "User", person, user, conn=tx)
        except SCIMException as exc:
            return self._refuse(tx, event, person, webhook_events.FAILED, str(exc.detail or exc))
        detail = None if outcome.seq is not None else "no change"
        return Verdict(webhook_events.APPLIED, detail, outcome.seq)

    def _refuse(
        self, tx: Any, event: Event, person: str | None, state: str, reason: str
    ) -> Verdict:
        """Journal an event ignored or failed (``hris.ignored``, ``hris.failed``)."""
        detail = reason if state == webhook_events.IGNORED else f"{reason} — {fix_of(reason)}"
        seq = journal.append(
            tx,
            journal.Entry(
                at=self.clock(),
                actor=f"hris:{event.feed}",
                request_id=event.event_id,
                op=f"hris.{state}",
                resource_type="User",
                resource_id=person,
                detail={
                    "feed": event.feed,
                    "event": event.event_id,
                    "type": event.event_type,
                    "externalId": event.external_id,
                    "occurred": event.occurred.isoformat(),
                    "reason": detail,
                },
            ),
        )
        return Verdict(state, detail, seq)

    def _log(self, event: Event, verdict: Verdict) -> None:
        extra: dict[str, object] = {"request_id": event.event_id}
        if verdict.seq is not None:
            extra["journal_seq"] = verdict.seq
        if verdict.state == webhook_events.FAILED:
            log.warning(
                "HR event %s of feed %s (%s, %s) failed: %s",
                event.event_id,
                event.feed,
                event.event_type,
                event.external_id,
                verdict.detail,
                extra=extra,
            )
        else:
            log.info(
                "HR event %s of feed %s (%s, %s) %s%s",
                event.event_id,
                event.feed,
                event.event_type,
                event.external_id,
                verdict.state,
                f": {verdict.detail}" if verdict.detail else "",
                extra=extra,
            )
