"""The ``moodle`` target: intents → Moodle web-service calls (REST protocol) → Results.

``MoodleTarget`` is the shell around the pure builders and parsers of
``bridge.targets.moodle_ws``: it looks up before it creates (idnumber is not unique in Moodle),
resolves courses and cohorts by idnumber or shortname once per instance, chunks batches under
``max_input_vars``, and journals every call it makes (LMS.md, DESIGN §7).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from urllib.parse import urlencode

import httpx

from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.moodle_ws import PATH
from bridge.targets.moodle_ws import SERVER_FIELDS
from bridge.targets.moodle_ws import Course
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.moodle_ws import changed_fields
from bridge.targets.moodle_ws import chunk
from bridge.targets.moodle_ws import enrolment_row
from bridge.targets.moodle_ws import flatten
from bridge.targets.moodle_ws import parse_answer
from bridge.targets.moodle_ws import pick_user
from bridge.targets.moodle_ws import role_id
from bridge.targets.moodle_ws import text
from bridge.targets.moodle_ws import user_row


@dataclass
class _Run:
    """One delivery's journal of calls and the account id once known."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    user_id: str | None = None

    def result(self, error: MoodleError) -> Result:
        calls = list(self.calls)
        if error.category is None:
            result = Result.retry(error.message, after=error.after, calls=calls)
        else:
            result = Result.dead(error.category, error.message, calls=calls)
        return dataclasses.replace(result, lms_user_id=self.user_id)


class MoodleTarget:
    """A Moodle site reached through its REST web services with one token."""

    kind = "moodle"

    def __init__(
        self,
        config: TargetConfig,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_input_vars: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self.options = dict(config.options)
        self.max_input_vars = max_input_vars
        self._token = token
        self._clock = clock
        timeout = float(self.options.get("timeout", 30))
        self._client = httpx.AsyncClient(
            base_url=config.base_url, transport=transport, timeout=timeout
        )
        self._courses: dict[str, Course] = {}
        self._cohorts: dict[str, int] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def deliver(self, delivery: Delivery) -> Result:
        run = _Run(user_id=delivery.lms_user_id)
        handlers = {
            "upsert_account": self._upsert,
            "suspend_account": self._set_suspended,
            "reactivate_account": self._set_suspended,
            "enrol": self._enrol,
            "suspend_enrolment": self._suspend_enrolment,
            "unenrol": self._unenrol,
            "add_cohort_member": self._add_member,
            "remove_cohort_member": self._remove_member,
        }
        handler = handlers.get(delivery.kind)
        if handler is None:
            return Result.dead(Category.configuration, f"moodle cannot {delivery.kind}")
        try:
            message = await handler(run, delivery)
        except MoodleError as error:
            return run.result(error)
        except (KeyError, TypeError, ValueError) as exc:  # an answer not shaped as documented
            return run.result(MoodleError(f"unexpected answer from Moodle: {exc!r}"))
        return Result.done(run.user_id, message, calls=run.calls)

    async def call(self, run: _Run, function: str, params: Mapping[str, Any]) -> Any:
        """One web-service call; the token goes in the body, never in a URL or the journal."""
        fields = [
            ("wstoken", self._token),
            ("wsfunction", function),
            ("moodlewsrestformat", "json"),
            *flatten(params),
        ]
        if len(fields) > self.max_input_vars:  # PHP would drop the rest silently
            raise MoodleError(f"{function}: {len(fields)} form fields exceed max_input_vars")
        entry: dict[str, Any] = {"function": function}
        run.calls.append(entry)
        try:
            response = await self._client.post(
                PATH,
                content=urlencode(fields).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except httpx.TimeoutException as exc:
            entry["error"] = "timeout"
            raise MoodleError(f"{function}: timeout", category=None) from exc
        except httpx.TransportError as exc:
            entry["error"] = type(exc).__name__
            raise MoodleError(f"{function}: {type(exc).__name__}: {exc}", category=None) from exc
        if response.status_code != 200:
            entry["http"] = response.status_code
        try:
            answer = parse_answer(
                function, response.status_code, response.headers, response.content, self._clock()
            )
        except MoodleError as error:
            if error.errorcode:
                entry["errorcode"] = error.errorcode
            raise
        if isinstance(answer, dict) and answer.get("warnings"):
            entry["warnings"] = [w.get("warningcode") for w in answer["warnings"]]
        return answer

    # -- accounts ------------------------------------------------------------------------------

    async def _users(self, run: _Run, field_: str, value: str) -> list[dict[str, Any]]:
        answer = await self.call(
            run, "core_user_get_users_by_field", {"field": field_, "values": [value]}
        )
        if not isinstance(answer, list):
            raise MoodleError(f"core_user_get_users_by_field: unexpected answer {answer!r:.80}")
        return answer

    async def _find_user(self, run: _Run, delivery: Delivery) -> Mapping[str, Any] | None:
        """The person's account: by the link's id, else by username, else by idnumber."""
        attributes = delivery.data.get("attributes") or {}
        if delivery.lms_user_id:
            found = await self._users(run, "id", delivery.lms_user_id)
            if found:
                return found[0]
        idnumbers = {
            text(v) for v in (attributes.get("idnumber"), delivery.account.get("idnumber")) if v
        }
        given = (attributes.get("username"), delivery.account.get("username"))
        usernames = list(dict.fromkeys(text(u).strip().lower() for u in given if u))
        for username in usernames:
            found = await self._users(run, "username", username)
            if found:
                user = found[0]
                if user.get("idnumber") and idnumbers and user["idnumber"] not in idnumbers:
                    raise MoodleError(
                        f"username {username!r} belongs to Moodle user {user['id']} whose "
                        f"idnumber is {user['idnumber']!r}, not {sorted(idnumbers)[0]!r}",
                        category=Category.data_quality,
                    )
                return user
        for idnumber in sorted(idnumbers):
            found = await self._users(run, "idnumber", idnumber)
            match = pick_user(found, usernames[0] if usernames else None, idnumber)
            if match is not None:
                return match
        return None

    async def _user_id(self, run: _Run, delivery: Delivery, *, required: bool) -> int | None:
        if run.user_id is None:
            user = await self._find_user(run, delivery)
            run.user_id = str(user["id"]) if user else None
        if run.user_id is None and required:
            raise MoodleError("no Moodle account for this person (its upsert has not succeeded)")
        return int(run.user_id) if run.user_id else None

    async def _update(self, run: _Run, userid: int, row: Mapping[str, Any]) -> None:
        answer = await self.call(run, "core_user_update_users", {"users": [{"id": userid, **row}]})
        warnings = answer.get("warnings", []) if isinstance(answer, dict) else []
        for warning in warnings:
            if str(warning.get("itemid", userid)) == str(userid):
                raise MoodleError(
                    f"core_user_update_users: {warning.get('warningcode')}: {warning.get('message')}",
                    category=Category.data_quality,
                    errorcode=str(warning.get("warningcode", "")),
                )

    async def _upsert(self, run: _Run, delivery: Delivery) -> str:
        attributes = dict(delivery.data.get("attributes") or {})
        user = await self._find_user(run, delivery)
        if user is None:
            merged = {k: v for k, v in {**delivery.account, **attributes}.items() if v is not None}
            row = user_row(merged, self.options, create=True)
            missing = [k for k in ("username", "firstname", "lastname", "email") if not row.get(k)]
            if missing:
                raise MoodleError(
                    f"cannot create: missing {', '.join(missing)}", category=Category.data_quality
                )
            try:
                answer = await self.call(run, "core_user_create_users", {"users": [row]})
            except MoodleError as error:
                if error.errorcode != "invalidparameter":
                    raise
                # Perhaps "Username already exists" (only debug sites say so): made meanwhile.
                user = await self._find_user(run, delivery)
                if user is None:
                    raise
            else:
                if not isinstance(answer, list) or len(answer) != 1 or "id" not in answer[0]:
                    raise MoodleError(f"core_user_create_users: unexpected answer {answer!r:.80}")
                run.user_id = str(answer[0]["id"])
                return "created"
        run.user_id = str(user["id"])
        changes = changed_fields(user_row(attributes, self.options, create=False), user)
        if not changes:
            return "up to date"
        await self._update(run, int(user["id"]), changes)
        return "updated"

    async def _set_suspended(self, run: _Run, delivery: Delivery) -> str:
        suspend = delivery.kind == "suspend_account"
        user = await self._find_user(run, delivery)
        if user is None:
            if suspend:
                return "no account to suspend"
            raise MoodleError("no Moodle account to reactivate")
        run.user_id = str(user["id"])
        if bool(user.get("suspended")) == suspend:
            return "already suspended" if suspend else "already active"
        await self._update(run, int(user["id"]), {"suspended": 1 if suspend else 0})
        return "suspended" if suspend else "reactivated"

    # -- courses and cohorts -------------------------------------------------------------------

    async def _course(self, run: _Run, ref: str | None) -> Course:
        """The course an intent names by idnumber or shortname, cached for this target."""
        if not ref:
            raise MoodleError("no course reference", category=Category.configuration)
        if ref not in self._courses:
            for field_ in ("idnumber", "shortname"):
                answer = await self.call(
                    run, "core_course_get_courses_by_field", {"field": field_, "value": ref}
                )
                courses = answer.get("courses", []) if isinstance(answer, dict) else []
                if courses:
                    found = courses[0]
                    methods = found.get("enrollmentmethods") or []
                    self._courses[ref] = Course(
                        int(found["id"]), str(found["shortname"]), "manual" in methods
                    )
                    break
            else:
                raise MoodleError(
                    f"no Moodle course with idnumber or shortname {ref!r}",
                    category=Category.configuration,
                )
        course = self._courses[ref]
        if not course.manual:
            raise MoodleError(
                f"course {ref!r} has no manual enrolment instance", category=Category.configuration
            )
        return course

    async def _cohort(self, run: _Run, ref: str | None) -> int:
        if not ref:
            raise MoodleError("no cohort reference", category=Category.configuration)
        if ref not in self._cohorts:
            answer = await self.call(
                run,
                "core_cohort_search_cohorts",
                {
                    "query": ref,
                    "context": {"contextlevel": "system", "instanceid": 0},
                    "includes": "all",
                },
            )
            cohorts = answer.get("cohorts", []) if isinstance(answer, dict) else []
            exact = [c for c in cohorts if c.get("idnumber") == ref]
            if not exact:
                raise MoodleError(
                    f"no Moodle cohort with idnumber {ref!r}", category=Category.configuration
                )
            self._cohorts[ref] = int(exact[0]["id"])
        return self._cohorts[ref]

    def _evict(self, ref: str | None, error: MoodleError) -> None:
        if ref and error.category is Category.configuration:  # the cached course may be gone
            self._courses.pop(ref, None)
            self._cohorts.pop(ref, None)

    # -- enrolments and cohort membership -------------------------------------------------------

    def _enrol_row(self, delivery: Delivery, userid: int, course: Course) -> dict[str, Any]:
        data = delivery.data
        if data.get("kind") == "path":
            raise MoodleError(
                "Moodle has no learning paths: use a course or a cohort",
                category=Category.configuration,
            )
        due = data.get("due_days")
        timeend = int(self._clock()) + int(due) * 86400 if due else None
        return enrolment_row(
            userid,
            course.id,
            role_id(str(data.get("role") or "student"), self.options),
            timeend=timeend,
        )

    async def _enrol(self, run: _Run, delivery: Delivery) -> str:
        userid = await self._user_id(run, delivery, required=True)
        assert userid is not None
        course = await self._course(run, delivery.ref)
        try:
            await self.call(
                run,
                "enrol_manual_enrol_users",
                {"enrolments": [self._enrol_row(delivery, userid, course)]},
            )
        except MoodleError as error:
            self._evict(delivery.ref, error)
            raise
        return f"enrolled in {course.shortname}"

    async def _suspend_enrolment(self, run: _Run, delivery: Delivery) -> str:
        userid = await self._user_id(run, delivery, required=False)
        if userid is None:
            return "no account: nothing to suspend"
        course = await self._course(run, delivery.ref)
        # Only an active enrolment is suspended: enrolling with suspend=1 would create one.
        active = await self.call(
            run, "core_enrol_get_users_courses", {"userid": userid, "returnusercount": 0}
        )
        if not any(int(c.get("id", 0)) == course.id for c in active or []):
            return f"not actively enrolled in {course.shortname}"
        row = enrolment_row(userid, course.id, role_id("student", self.options), suspend=True)
        await self.call(run, "enrol_manual_enrol_users", {"enrolments": [row]})
        return f"enrolment in {course.shortname} suspended"

    async def _unenrol(self, run: _Run, delivery: Delivery) -> str:
        userid = await self._user_id(run, delivery, required=False)
        if userid is None:
            return "no account: nothing to unenrol"
        course = await self._course(run, delivery.ref)
        try:
            await self.call(
                run,
                "enrol_manual_unenrol_users",
                {"enrolments": [{"userid": userid, "courseid": course.id}]},
            )
        except MoodleError as error:
            self._evict(delivery.ref, error)
            raise
        return f"unenrolled from {course.shortname}"

    async def _add_member(self, run: _Run, delivery: Delivery) -> str:
        userid = await self._user_id(run, delivery, required=True)
        member = {
            "cohorttype": {"type": "idnumber", "value": delivery.ref or ""},
            "usertype": {"type": "id", "value": userid},
        }
        answer = await self.call(run, "core_cohort_add_cohort_members", {"members": [member]})
        for warning in answer.get("warnings", []) if isinstance(answer, dict) else []:
            code, message = str(warning.get("warningcode")), str(warning.get("message", ""))
            if code == "3":
                return f"already in cohort {delivery.ref}"
            category = (
                Category.configuration if message.startswith("cohort") else Category.configuration
            )
            raise MoodleError(
                f"core_cohort_add_cohort_members: {code}: {message}", category=category
            )
        return f"added to cohort {delivery.ref}"

    async def _remove_member(self, run: _Run, delivery: Delivery) -> str:
        userid = await self._user_id(run, delivery, required=False)
        if userid is None:
            return "no account: nothing to remove"
        cohortid = await self._cohort(run, delivery.ref)
        try:
            await self.call(
                run,
                "core_cohort_delete_cohort_members",
                {"members": [{"cohortid": cohortid, "userid": userid}]},
            )
        except MoodleError as error:
            self._evict(delivery.ref, error)
            raise
        return f"removed from cohort {delivery.ref}"

    # -- batches -------------------------------------------------------------------------------

    async def deliver_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
        """Deliver intents in order; runs of enrolments of linked accounts go in batch calls.

        Batches are chunked under ``max_input_vars``. enrol_manual_enrol_users is
        transactional: a chunk refused for a permanent reason is delivered again one row at
        a time, so that only the bad row goes dead.
        """
        results: list[Result] = []
        pending: list[Delivery] = []
        for delivery in deliveries:
            if delivery.kind == "enrol" and delivery.lms_user_id:
                pending.append(delivery)
                continue
            results.extend(await self._enrol_batch(pending))
            pending = []
            results.append(await self.deliver(delivery))
        results.extend(await self._enrol_batch(pending))
        return results

    async def _enrol_batch(self, deliveries: Sequence[Delivery]) -> list[Result]:
        results: dict[int, Result] = {}
        rows: list[tuple[int, dict[str, Any]]] = []
        run = _Run()
        for index, delivery in enumerate(deliveries):
            try:
                course = await self._course(run, delivery.ref)
                rows.append(
                    (index, self._enrol_row(delivery, int(delivery.lms_user_id or 0), course))
                )
            except MoodleError as error:
                results[index] = dataclasses.replace(
                    run.result(error), lms_user_id=delivery.lms_user_id
                )
        budget = self.max_input_vars - SERVER_FIELDS
        done = 0
        for part in chunk("enrolments", [row for _, row in rows], budget):
            members = rows[done : done + len(part)]
            done += len(part)
            try:
                await self.call(run, "enrol_manual_enrol_users", {"enrolments": part})
            except MoodleError as error:
                for index, _ in members:
                    delivery = deliveries[index]
                    results[index] = (
                        dataclasses.replace(run.result(error), lms_user_id=delivery.lms_user_id)
                        if error.category is None
                        else await self.deliver(delivery)
                    )
                continue
            for index, row in members:
                results[index] = Result.done(
                    str(row["userid"]), "enrolled", calls=list(run.calls), batch=len(part)
                )
        return [results[index] for index in range(len(deliveries))]
