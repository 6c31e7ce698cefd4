"""The simulator's cohort read: ``core_cohort_get_cohort_members`` (Moodle 4.3, LMS.md).

As ``core_cohort_external::get_cohort_members``: ``cohortids`` is a list of cohort ids; each
must exist (``$DB->get_record(..., MUST_EXIST)``: ``invalidrecord``, the whole call fails), and
the answer is one ``{"cohortid", "userids"}`` per id asked, in the order asked, the members in
Moodle's order (last name, first name). Not paged: Moodle answers a cohort whole. A deleted
user is no member (``delete_user`` removes the memberships).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from bridge.lmssim.moodle_ws import Functions
from bridge.lmssim.moodle_ws import Multiple
from bridge.lmssim.moodle_ws import Value
from bridge.lmssim.moodle_ws import missing_record

if TYPE_CHECKING:
    from bridge.lmssim.moodle import MoodleSite

FUNCTIONS = Functions()


@FUNCTIONS.register("core_cohort_get_cohort_members", cohortids=Multiple(Value("int")))
def get_cohort_members(site: MoodleSite, params: dict[str, Any]) -> Any:
    answer = []
    for cohortid in params["cohortids"]:
        if cohortid not in site.cohorts:
            raise missing_record("cohort")
        members = [site.users[u] for c, u in site.members if c == cohortid and u in site.users]
        members.sort(key=lambda user: (user.lastname, user.firstname, user.id))
        answer.append({"cohortid": cohortid, "userids": [user.id for user in members]})
    return answer
