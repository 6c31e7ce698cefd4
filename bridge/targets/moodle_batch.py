"""Batched delivery for the ``moodle`` target: many intents in a few web-service calls.

``Batch.deliver`` takes what the relay may send together (one delivery per person) and groups
it by intent kind, in the order the kinds first appear. Each group makes the calls the single
path (``MoodleTarget.deliver``) makes, but for many people at once: lookups with many
``values[n]`` (by id for linked accounts, else by username, then by idnumber, which is not
unique), one ``core_user_create_users`` for the new accounts, one ``core_user_update_users``
for the changed ones, one read-back, one enrolment, unenrolment or cohort call. Every call is
chunked under ``max_input_vars`` and ``batch_size`` (LMS.md).

What the single path checks, the batch checks too (the values before sending, the owner of a
username, ``pick_user``, the profile fields the read-back shows dropped), and each person's
Result keeps its own journal: the calls it took part in, each marked with its ``batch`` size.
How Moodle fails a batch decides what happens to its rows (LMS.md): a transient failure retries
every row of the chunk; a chunk refused for a permanent reason (create, delete and enrolment
calls are all-or-nothing) is split in halves until the bad row stands alone, which alone goes
dead with Moodle's message and category; update and cohort warnings name their person.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.moodle_accounts import username_owner
from bridge.targets.moodle_ws import SERVER_FIELDS
from bridge.targets.moodle_ws import WHOLE_CALL_CODES
from bridge.targets.moodle_ws import Course
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.moodle_ws import Run
from bridge.targets.moodle_ws import chunk
from bridge.targets.moodle_ws import enrolment_row
from bridge.targets.moodle_ws import live_users
from bridge.targets.moodle_ws import member_warnings
from bridge.targets.moodle_ws import pick_user
from bridge.targets.moodle_ws import role_id

if TYPE_CHECKING:
    from bridge.targets.moodle import MoodleTarget

DEFAULT_BATCH_SIZE = 200


@dataclass(eq=False)
class Item:
    """One delivery on its way through the batch: its journal, the account found, the row it
    contributes to the current call, and what it wrote (for the read-back)."""

    delivery: Delivery
    run: Run
    user: Mapping[str, Any] | None = None
    row: dict[str, Any] = field(default_factory=dict)
    written: dict[str, Any] | None = None
    message: str = ""
    batch: int = 0  # the rows of the write call it went in (before one: of its first lookup)
    result: Result | None = None


Refusal = Callable[[Item, MoodleError], Awaitable[None]]


class Batch:
    """One ``deliver_many`` of a ``MoodleTarget``."""

    def __init__(self, target: MoodleTarget) -> None:
        self.target = target
        self.accounts = target.accounts
        self._refs: dict[tuple[str, str], Course | int | MoodleError] = {}

    # -- the shell -----------------------------------------------------------------------------

    async def deliver(self, deliveries: Sequence[Delivery]) -> list[Result]:
        items = [Item(d, Run(user_id=d.lms_user_id)) for d in deliveries]
        handlers: dict[str, Callable[[list[Item]], Awaitable[None]]] = {
            "upsert_account": self._upsert,
            "suspend_account": self._set_suspended,
            "reactivate_account": self._set_suspended,
            "enrol": self._enrol,
            "suspend_enrolment": self._suspend_enrolment,
            "unenrol": self._unenrol,
            "add_cohort_member": self._add_member,
            "remove_cohort_member": self._remove_member,
        }
        # by handler, in order of first appearance: suspensions and reactivations go together
        groups: dict[Callable[[list[Item]], Awaitable[None]] | None, list[Item]] = {}
        for item in items:
            groups.setdefault(handlers.get(item.delivery.kind), []).append(item)
        for handler, group in groups.items():
            try:
                if handler is None:  # a kind Moodle has no call for: the single path says so
                    for item in group:
                        item.result = await self.target.deliver(item.delivery)
                else:
                    await handler(group)
            except (KeyError, TypeError, ValueError) as exc:  # an answer not as documented
                for item in pending(group):
                    self.fail(item, MoodleError(f"unexpected answer from Moodle: {exc!r}"))
        for item in pending(items):  # every path gives a Result; this is the last resort
            item.result = await self.target.deliver(item.delivery)
        return [item.result for item in items if item.result is not None]

    def finish(self, item: Item, message: str) -> None:
        run = item.run
        item.result = Result.done(run.user_id, message, **run.detail, batch=item.batch)

    def fail(self, item: Item, error: MoodleError) -> None:
        result = item.run.result(error)
        item.result = dataclasses.replace(result, detail={**result.detail, "batch": item.batch})

    async def call(
        self, items: Sequence[Item], function: str, params: Mapping[str, Any], *, write: bool
    ) -> Any:
        """One call on behalf of ``items``: journalled in each one's run with its batch size."""
        scratch = Run()
        try:
            return await self.target.call(scratch, function, params)
        finally:
            for item in items:
                item.run.calls.extend({**entry, "batch": len(items)} for entry in scratch.calls)
                if write or not item.batch:
                    item.batch = len(items)

    def parts(self, key: str, rows: Sequence[Any], extra: int = 0) -> list[list[Any]]:
        """``rows`` chunked under ``max_input_vars`` (less the server's and ``extra`` fields)
        and ``batch_size``."""
        budget = self.target.max_input_vars - SERVER_FIELDS - extra
        return chunk(key, rows, budget, self.target.batch_size)

    async def send(
        self, function: str, key: str, items: Sequence[Item], refusal: Refusal | None = None
    ) -> list[tuple[list[Item], Any]]:
        """The items' rows in as few calls as ``parts`` allows; the chunks Moodle answered,
        with its answers. A chunk that failed gives its items their Result: transient, all
        retry; permanent, it is split until the bad row stands alone, which goes dead (or
        goes to ``refusal``, which explains it)."""
        answered: list[tuple[list[Item], Any]] = []
        done = 0
        for rows in self.parts(key, [item.row for item in items]):
            part = list(items[done : done + len(rows)])
            done += len(rows)
            await self._send(function, key, part, answered, refusal)
        return answered

    async def _send(
        self,
        function: str,
        key: str,
        part: list[Item],
        answered: list[tuple[list[Item], Any]],
        refusal: Refusal | None,
    ) -> None:
        try:
            answer = await self.call(part, function, {key: [item.row for item in part]}, write=True)
        except MoodleError as error:
            whole = error.category is None or not error.errorcode
            if len(part) > 1 and not whole and error.errorcode not in WHOLE_CALL_CODES:
                half = len(part) // 2
                await self._send(function, key, part[:half], answered, refusal)
                await self._send(function, key, part[half:], answered, refusal)
                return
            for item in part:
                if refusal is not None and len(part) == 1 and not whole:
                    await refusal(item, error)
                else:
                    self.fail(item, error)
            return
        answered.append((part, answer))

    # -- looking accounts up -------------------------------------------------------------------

    async def lookup(
        self, field_: str, items: Sequence[Item], values: Callable[[Item], list[str]]
    ) -> dict[str, list[Mapping[str, Any]]]:
        """core_user_get_users_by_field for every value of ``items``, in chunks: the accounts
        found by value. A chunk's failure ends its items: retry when transient, else their
        single path (which names the problem)."""
        wanted: dict[str, list[Item]] = {}
        for item in items:
            for value in values(item):
                wanted.setdefault(value, []).append(item)
        found: dict[str, list[Mapping[str, Any]]] = {}
        for part in self.parts("values", list(wanted), extra=1):
            holders = list({id(i): i for v in part for i in wanted[v] if i.result is None}.values())
            if not holders:
                continue
            try:
                answer = live_users(  # by id, Moodle answers deleted accounts too
                    await self.call(
                        holders,
                        "core_user_get_users_by_field",
                        {"field": field_, "values": part},
                        write=False,
                    )
                )
            except MoodleError as error:
                for item in holders:
                    if error.category is None:
                        self.fail(item, error)
                    else:
                        item.result = await self.target.deliver(item.delivery)
                continue
            for user in answer:
                value = str(user["id"]) if field_ == "id" else str(user.get(field_) or "")
                found.setdefault(value, []).append(user)
        return found

    async def find(self, items: Sequence[Item], *, by_id: bool) -> None:
        """``Accounts.find`` for many: each item's ``user`` set when its account exists."""
        if by_id:
            linked = [i for i in items if (i.delivery.lms_user_id or "").isdigit()]
            for item in items:  # a link that is no id: the single path says what is wrong
                if item.delivery.lms_user_id and item not in linked:
                    item.result = await self.target.deliver(item.delivery)
            by_link = await self.lookup("id", linked, lambda i: [str(i.delivery.lms_user_id)])
            for item in pending(linked):
                same = by_link.get(str(item.delivery.lms_user_id))
                item.user = same[0] if same else None
        rest = [i for i in pending(items) if i.user is None]
        keys = {id(i): self.accounts.keys(i.delivery) for i in rest}
        by_name = await self.lookup("username", rest, lambda i: keys[id(i)][1])
        for item in pending(rest):
            idnumbers, usernames = keys[id(item)]
            username = next((u for u in usernames if by_name.get(u)), None)
            if username is not None:
                try:
                    item.user = username_owner(by_name[username][0], username, idnumbers)
                except MoodleError as error:
                    self.fail(item, error)
        rest = [i for i in pending(rest) if i.user is None]
        by_idnumber = await self.lookup("idnumber", rest, lambda i: sorted(keys[id(i)][0]))
        for item in pending(rest):
            idnumbers, usernames = keys[id(item)]
            try:
                for idnumber in sorted(idnumbers):
                    found = by_idnumber.get(idnumber, [])
                    item.user = pick_user(found, usernames[0] if usernames else None, idnumber)
                    if item.user is not None:
                        break
            except MoodleError as error:
                self.fail(item, error)

    async def link(self, items: Sequence[Item], *, required: bool, none: str = "") -> None:
        """``Accounts.user_id`` for many: the account id of each item (its link, else found);
        an item without one ends here (dead when ``required``, else done with ``none``)."""
        unlinked = [i for i in items if i.run.user_id is None]
        await self.find(unlinked, by_id=False)
        for item in pending(unlinked):
            if item.user is not None:
                item.run.user_id = str(item.user["id"])
            elif required:
                self.fail(
                    item,
                    MoodleError("no Moodle account for this person (its upsert has not succeeded)"),
                )
            else:
                self.finish(item, none)

    async def resolve(self, items: Sequence[Item], what: str) -> dict[int, Course | int]:
        """The course (``what`` "course") or cohort id each item's ref names, looked up once
        per ref (and cached by the target); items whose ref is not found end dead."""
        resolved: dict[int, Course | int] = {}
        for item in pending(items):
            ref = item.delivery.ref or ""
            key = (what, ref)
            if key not in self._refs:
                scratch = Run()
                try:
                    if what == "course":
                        self._refs[key] = await self.target._course(scratch, ref)
                    else:
                        self._refs[key] = await self.target._cohort(scratch, ref)
                except MoodleError as error:
                    self._refs[key] = error
                item.run.calls.extend(scratch.calls)
            found = self._refs[key]
            if isinstance(found, MoodleError):
                self.fail(item, found)
            else:
                resolved[id(item)] = found
        return resolved

    async def evicting(self, item: Item, error: MoodleError) -> None:
        """A row refused alone: dead, and the cached course or cohort forgotten when the
        refusal says it may be gone."""
        self.target._evict(item.delivery.ref, error)
        self.fail(item, error)

    # -- accounts ------------------------------------------------------------------------------

    async def _upsert(self, items: list[Item]) -> None:
        await self.find(items, by_id=True)
        new = [i for i in pending(items) if i.user is None]
        for item in new:
            try:
                item.row = self.accounts.new_row(item.delivery)
            except MoodleError as error:
                self.fail(item, error)
        created = await self.send(
            "core_user_create_users", "users", pending(new), refusal=self._create_refusal
        )
        for part, answer in created:
            ids = {str(u["username"]): str(u["id"]) for u in answer if isinstance(u, Mapping)}
            for item in part:
                username = str(item.row["username"])
                if username not in ids:  # retrying is safe: the lookup comes first
                    self.fail(
                        item,
                        MoodleError(
                            f"core_user_create_users: no account {username!r} in the answer",
                            category=None,
                        ),
                    )
                    continue
                item.run.user_id = ids[username]
                item.message, item.written = "created", item.row
        changed = []
        for item in pending(items):
            if item.user is None or item.written is not None:
                continue
            try:
                changes = self.accounts.changes(item.run, item.delivery, item.user)
            except MoodleError as error:
                self.fail(item, error)
                continue
            if not changes:
                self.finish(item, "up to date")
                continue
            item.row = {"id": int(item.user["id"]), **changes}
            item.message, item.written = "updated", changes
            changed.append(item)
        await self._update(changed)
        await self._read_back([i for i in pending(items) if i.written is not None])

    async def _create_refusal(self, item: Item, error: MoodleError) -> None:
        """The row refused alone: explained as the single path does; an account that turned
        out to exist goes on to the update."""
        try:
            item.user = await self.accounts.create_refusal(item.run, item.delivery, item.row, error)
        except MoodleError as refusal:
            self.fail(item, refusal)

    async def _update(self, items: Sequence[Item]) -> None:
        """core_user_update_users for many: a warning is its own account's failure only."""
        for part, answer in await self.send("core_user_update_users", "users", items):
            warnings = answer.get("warnings") or [] if isinstance(answer, dict) else []
            if any("itemid" not in w for w in warnings):  # not attributable: one by one
                for item in part:
                    item.result = await self.target.deliver(item.delivery)
                continue
            by_user = {}
            for warning in reversed(warnings):  # the first warning about an account wins
                by_user[str(warning["itemid"])] = warning
            for item in part:
                warning = by_user.get(str(item.row["id"]))
                if warning is not None:
                    userid, written = int(item.row["id"]), item.written or {}
                    error = await self.accounts.update_refusal(item.run, userid, written, warning)
                    self.fail(item, error)

    async def _read_back(self, items: Sequence[Item]) -> None:
        """The accounts written, read in batch: what Moodle holds, and what it dropped."""
        found = await self.lookup("id", items, lambda i: [str(i.run.user_id)])
        for item in pending(items):
            same = found.get(str(item.run.user_id))
            try:
                self.accounts.confirm(item.run, item.written or {}, same[0] if same else None)
            except MoodleError as error:
                self.fail(item, error)
                continue
            self.finish(item, item.message)

    async def _set_suspended(self, items: list[Item]) -> None:
        await self.find(items, by_id=True)
        writes = []
        for item in pending(items):
            suspend = item.delivery.kind == "suspend_account"
            if item.user is None:
                if suspend:
                    self.finish(item, "no account to suspend")
                else:
                    self.fail(item, MoodleError("no Moodle account to reactivate"))
                continue
            item.run.user_id = str(item.user["id"])
            if bool(item.user.get("suspended")) == suspend:
                self.finish(item, "already suspended" if suspend else "already active")
                continue
            item.written = {"suspended": 1 if suspend else 0}
            item.row = {"id": int(item.user["id"]), **item.written}
            item.message = "suspended" if suspend else "reactivated"
            writes.append(item)
        await self._update(writes)
        for item in pending(writes):
            self.finish(item, item.message)

    # -- enrolments and cohort membership ------------------------------------------------------

    async def _enrol(self, items: list[Item]) -> None:
        await self.link(items, required=True)
        courses = await self.resolve(items, "course")
        for item in pending(items):
            course = courses[id(item)]
            assert isinstance(course, Course)
            try:
                item.row = self.target._enrol_row(item.delivery, int(str(item.run.user_id)), course)
            except MoodleError as error:
                self.fail(item, error)
                continue
            item.message = f"enrolled in {course.shortname}"
        await self._write("enrol_manual_enrol_users", "enrolments", items)

    async def _suspend_enrolment(self, items: list[Item]) -> None:
        await self.link(items, required=False, none="no account: nothing to suspend")
        courses = await self.resolve(items, "course")
        for item in pending(items):
            course = courses[id(item)]
            assert isinstance(course, Course)
            userid = int(str(item.run.user_id))
            # Only an active enrolment is suspended: enrolling with suspend=1 would create one.
            # Moodle lists a user's active courses one user a call.
            try:
                active = await self.target.call(
                    item.run,
                    "core_enrol_get_users_courses",
                    {"userid": userid, "returnusercount": 0},
                )
            except MoodleError as error:
                self.fail(item, error)
                continue
            if not any(int(c.get("id", 0)) == course.id for c in active or []):
                self.finish(item, f"not actively enrolled in {course.shortname}")
                continue
            student = role_id("student", self.target.options)
            item.row = enrolment_row(userid, course.id, student, suspend=True)
            item.message = f"enrolment in {course.shortname} suspended"
        await self._write("enrol_manual_enrol_users", "enrolments", items)

    async def _unenrol(self, items: list[Item]) -> None:
        await self.link(items, required=False, none="no account: nothing to unenrol")
        courses = await self.resolve(items, "course")
        for item in pending(items):
            course = courses[id(item)]
            assert isinstance(course, Course)
            item.row = {"userid": int(str(item.run.user_id)), "courseid": course.id}
            item.message = f"unenrolled from {course.shortname}"
        await self._write("enrol_manual_unenrol_users", "enrolments", items)

    async def _remove_member(self, items: list[Item]) -> None:
        await self.link(items, required=False, none="no account: nothing to remove")
        cohorts = await self.resolve(items, "cohort")
        for item in pending(items):
            item.row = {"cohortid": cohorts[id(item)], "userid": int(str(item.run.user_id))}
            item.message = f"removed from cohort {item.delivery.ref}"
        await self._write("core_cohort_delete_cohort_members", "members", items)

    async def _write(self, function: str, key: str, items: Sequence[Item]) -> None:
        """A transactional write for the pending items: done with their message once the
        chunk is answered."""
        for part, _ in await self.send(function, key, pending(items), refusal=self.evicting):
            for item in part:
                self.finish(item, item.message)

    async def _add_member(self, items: list[Item]) -> None:
        """core_cohort_add_cohort_members for many: per-member warnings ("3" already a
        member: done; "2" unknown cohort or account: dead, configuration)."""
        await self.link(items, required=True)
        for item in pending(items):
            item.row = {
                "cohorttype": {"type": "idnumber", "value": item.delivery.ref or ""},
                "usertype": {"type": "id", "value": int(str(item.run.user_id))},
            }
        for part, answer in await self.send(
            "core_cohort_add_cohort_members", "members", pending(items)
        ):
            warnings = answer.get("warnings") or [] if isinstance(answer, dict) else []
            verdicts = member_warnings([item.row for item in part], warnings)
            if verdicts is None:  # a warning no member can be told from: one by one (repeat-safe)
                for item in part:
                    item.result = await self.target.deliver(item.delivery)
                continue
            for item, warning in zip(part, verdicts, strict=True):
                ref = item.delivery.ref
                if warning is None:
                    self.finish(item, f"added to cohort {ref}")
                elif str(warning.get("warningcode")) == "3":
                    self.finish(item, f"already in cohort {ref}")
                else:
                    code, message = str(warning.get("warningcode")), str(warning.get("message", ""))
                    self.fail(
                        item,
                        MoodleError(
                            f"core_cohort_add_cohort_members: {code}: {message}",
                            category=Category.configuration,
                        ),
                    )


def pending(items: Sequence[Item]) -> list[Item]:
    """The items that have no Result yet."""
    return [item for item in items if item.result is None]
