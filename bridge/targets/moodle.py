"""The ``moodle`` target: intents → Moodle web-service calls (REST protocol) → Results.

``MoodleTarget`` is the shell around the pure builders and parsers of
``bridge.targets.moodle_ws``: it looks up before it creates (idnumber is not unique in Moodle),
checks every value against what Moodle accepts before sending it, reads an account back after
writing it (Moodle drops unknown profile fields silently), resolves courses and cohorts by
idnumber or shortname once per instance, and journals every call it makes (LMS.md, DESIGN §7).
``deliver_many`` does the same for many people in batch calls chunked under the options
``max_input_vars`` and ``batch_size`` (``bridge.targets.moodle_batch``). ``probe`` is the
relay's circuit-breaker probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.moodle_accounts import Accounts
from bridge.targets.moodle_batch import DEFAULT_BATCH_SIZE
from bridge.targets.moodle_batch import Batch
from bridge.targets.moodle_ws import PATH
from bridge.targets.moodle_ws import PROBE_FUNCTIONS
from bridge.targets.moodle_ws import SERVER_FIELDS
from bridge.targets.moodle_ws import Course
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.moodle_ws import Run
from bridge.targets.moodle_ws import enrolment_row
from bridge.targets.moodle_ws import flatten
from bridge.targets.moodle_ws import parse_answer
from bridge.targets.moodle_ws import role_id


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
        # PHP's max_input_vars of the site (LMS.md: at least 5000) and the most rows a batch
        # call carries: target options, as a site may be configured below or above the default
        self.max_input_vars = int(self.options.get("max_input_vars", max_input_vars))
        self.batch_size = int(self.options.get("batch_size", DEFAULT_BATCH_SIZE))
        if self.max_input_vars <= SERVER_FIELDS + 1 or self.batch_size < 1:
            raise ValueError("options.max_input_vars must exceed 4 and options.batch_size be ≥ 1")
        self._token = token
        self._clock = clock
        timeout = float(self.options.get("timeout", 30))
        self._client = httpx.AsyncClient(
            base_url=config.base_url, transport=transport, timeout=timeout
        )
        self._courses: dict[str, Course] = {}
        self._cohorts: dict[str, int] = {}
        self.accounts = Accounts(self.call, self.options)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def deliver(self, delivery: Delivery) -> Result:
        run = Run(user_id=delivery.lms_user_id)
        handlers = {
            "upsert_account": self.accounts.upsert,
            "suspend_account": self.accounts.set_suspended,
            "reactivate_account": self.accounts.set_suspended,
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
        return Result.done(run.user_id, message, **run.detail)

    async def probe(self) -> Result:
        """One cheap call (core_webservice_get_site_info): done when the site answers and the
        token works; retry (transient, with Retry-After) when it is down, slow or throttling;
        dead (configuration) on a bad token, a function outside the service, REST disabled."""
        run = Run()
        try:
            info = await self.call(run, PROBE_FUNCTIONS[0], {})
            site = {k: info[k] for k in ("sitename", "release", "version", "userid")}
            site["functions"] = sorted(str(f["name"]) for f in info.get("functions") or [])
        except MoodleError as error:
            return run.result(error)
        except (KeyError, TypeError, ValueError) as exc:
            return run.result(MoodleError(f"{PROBE_FUNCTIONS[0]}: unexpected answer: {exc!r}"))
        message = f"Moodle {site['release']} at {self._client.base_url} answers"
        return Result.done(None, message, site=site, **run.detail)

    async def call(self, run: Run, function: str, params: Mapping[str, Any]) -> Any:
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

    # -- courses and cohorts -------------------------------------------------------------------

    async def _course(self, run: Run, ref: str | None) -> Course:
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

    async def _cohort(self, run: Run, ref: str | None) -> int:
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
        # due_days is the bridge's own deadline (kept in the confirmed state by the relay), never
        # sent: Moodle's timeend ends the learner's access (LMS.md). Only access_ends sets it.
        ends = data.get("access_end_days")
        timeend = int(self._clock()) + int(ends) * 86400 if ends is not None else None
        return enrolment_row(
            userid,
            course.id,
            role_id(str(data.get("role") or "student"), self.options),
            timeend=timeend,
        )

    async def _enrol(self, run: Run, delivery: Delivery) -> str:
        userid = await self.accounts.user_id(run, delivery, required=True)
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

    async def _suspend_enrolment(self, run: Run, delivery: Delivery) -> str:
        userid = await self.accounts.user_id(run, delivery, required=False)
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

    async def _unenrol(self, run: Run, delivery: Delivery) -> str:
        userid = await self.accounts.user_id(run, delivery, required=False)
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

    async def _add_member(self, run: Run, delivery: Delivery) -> str:
        userid = await self.accounts.user_id(run, delivery, required=True)
        member = {
            "cohorttype": {"type": "idnumber", "value": delivery.ref or ""},
            "usertype": {"type": "id", "value": userid},
        }
        answer = await self.call(run, "core_cohort_add_cohort_members", {"members": [member]})
        for warning in answer.get("warnings", []) if isinstance(answer, dict) else []:
            code, message = str(warning.get("warningcode")), str(warning.get("message", ""))
            if code == "3":
                return f"already in cohort {delivery.ref}"
            # "2": the cohort (a rule's cohort idnumber) or the linked account does not exist
            raise MoodleError(
                f"core_cohort_add_cohort_members: {code}: {message}",
                category=Category.configuration,
            )
        return f"added to cohort {delivery.ref}"

    async def _remove_member(self, run: Run, delivery: Delivery) -> str:
        userid = await self.accounts.user_id(run, delivery, required=False)
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
        """Deliver intents (one per person) in batch calls, one Result per delivery in their
        order (``bridge.targets.moodle_batch``)."""
        return await Batch(self).deliver(deliveries)
