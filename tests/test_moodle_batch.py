"""Moodle in batch: ``MoodleTarget.deliver_many`` against the simulator.

Many people in few calls (counted by the simulator), and the rows of a batch kept apart as
Moodle's answers allow (LMS.md): create is all-or-nothing (the bad row is isolated, only that
person goes dead), update and cohort warnings name their person, a transient failure retries
every row, chunks stay under ``max_input_vars``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import create_app
from bridge.lmssim.moodle import MoodleSite
from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_ws import chunk
from bridge.targets.moodle_ws import member_warnings
from tests.test_moodle_site import BASE
from tests.test_moodle_site import site_of


@pytest.fixture
def app() -> Starlette:
    return create_app()


@pytest.fixture
def site(app: Starlette) -> MoodleSite:
    return site_of(app)


def moodle(app: Starlette, **options: Any) -> MoodleTarget:
    config = TargetConfig("moodle", "moodle", BASE, options={"auth": "oauth2", **options})
    return MoodleTarget(config, SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=app))


@pytest.fixture
async def target(app: Starlette) -> AsyncIterator[MoodleTarget]:
    target = moodle(app)
    yield target
    await target.aclose()


def person(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "idnumber": f"E{n:05d}",
        "username": f"p{n:05d}",
        "email": f"p{n:05d}@example.com",
        "firstname": "Pat",
        "lastname": f"Person {n}",
        "title": "Analyst",
        "department": "Claims",
        **changes,
    }


def upsert(attributes: dict[str, Any], lms_user_id: str | None = None) -> Delivery:
    intent = {
        "kind": "upsert_account",
        "person": f"person-{attributes['idnumber']}",
        "target": "moodle",
        "rule": "r",
        "data": {"create": True, "attributes": attributes},
    }
    return Delivery(intent, lms_user_id, account=dict(attributes))


def intent(kind: str, user: str | None, ref: str | None = None, n: int = 0) -> Delivery:
    body: dict[str, Any] = {"kind": kind, "person": f"person-{n}", "target": "moodle", "rule": "r"}
    if ref is not None:
        body["ref"] = ref
        body["data"] = {"kind": "enrolment", "role": "student"}
    return Delivery(body, user, account={"idnumber": f"E{n:05d}", "username": f"p{n:05d}"})


def calls(site: MoodleSite) -> int:
    return sum(site.calls.values())


def user_id(site: MoodleSite, username: str) -> str:
    user = site.user_named(username)
    assert user is not None
    return str(user.id)


def statuses(results: list[Result]) -> list[str]:
    return [r.status.value for r in results]


async def test_batch_creates_many_people_in_a_few_calls(
    site: MoodleSite, target: MoodleTarget
) -> None:
    people = [person(n) for n in range(200)]
    results = await target.deliver_many([upsert(p) for p in people])
    assert statuses(results) == ["done"] * 200
    assert {r.message for r in results} == {"created"}
    assert [r.lms_user_id for r in results] == [user_id(site, p["username"]) for p in people]
    # a lookup by username, one by idnumber, one create, one read-back: not 4 calls a person
    assert site.calls == {"core_user_get_users_by_field": 3, "core_user_create_users": 1}
    assert site.rows["core_user_create_users"] == 200
    first = results[0]
    assert first.detail["batch"] == 200
    assert [c["function"] for c in first.detail["calls"]] == [
        "core_user_get_users_by_field",
        "core_user_get_users_by_field",
        "core_user_create_users",
        "core_user_get_users_by_field",
    ]
    assert {c["batch"] for c in first.detail["calls"]} == {200}
    assert first.detail["confirmed"]["customfields"] == {"title": "Analyst"}
    made = site.user_named("p00007")
    assert made is not None and made.idnumber == "E00007" and made.lastname == "Person 7"

    again = await target.deliver_many([upsert(p) for p in people])  # repeat-safe
    assert {r.message for r in again} == {"up to date"}
    assert [r.lms_user_id for r in again] == [r.lms_user_id for r in results]
    assert site.calls["core_user_create_users"] == 1


async def test_batch_rollout_takes_ten_times_fewer_calls() -> None:
    """upsert, then enrol, then cohort membership, as the relay's rounds send them."""

    async def rollout(batched: bool) -> int:
        app = create_app()
        target = moodle(app)
        people = [person(n) for n in range(60)]
        made = await send(target, [upsert(p) for p in people], batched)
        ids = [r.lms_user_id for r in made]
        await send(target, [intent("enrol", u, "BEN-2026", n) for n, u in enumerate(ids)], batched)
        joined = await send(
            target,
            [intent("add_cohort_member", u, "ALLSTAFF", n) for n, u in enumerate(ids)],
            batched,
        )
        await target.aclose()
        assert {r.message for r in joined} == {"added to cohort ALLSTAFF"}
        site = site_of(app)
        assert len([m for m in site.members if m[0] == 1]) == 60
        return calls(site)

    single, batched = await rollout(False), await rollout(True)
    assert single == 60 * 6 + 1  # 4 for an upsert, 1 an enrolment, 1 a membership; a course
    assert batched * 10 <= single


async def send(target: MoodleTarget, deliveries: list[Delivery], batched: bool) -> list[Result]:
    if batched:
        return await target.deliver_many(deliveries)
    return [await target.deliver(d) for d in deliveries]


async def test_batch_isolates_the_rows_moodle_refuses(
    site: MoodleSite, target: MoodleTarget
) -> None:
    holder = site.add_user("holder", email="p00050@example.com")  # the address is taken
    people = [person(n) for n in range(200)]
    people[120]["username"] = "josé.núñez"  # refused before sending: Moodle wants ASCII
    people[170] = person(170, username="p00171", idnumber="E99999")  # another person's name
    results = await target.deliver_many([upsert(p) for p in people])
    bad = {50, 120, 170, 171}  # 170: checked below
    assert [n for n, r in enumerate(results) if r.status is not Status.done] == [50, 120, 171]
    assert results[50].category is Category.data_quality
    assert results[50].message.startswith(
        f"email p00050@example.com is already used by Moodle user {holder.id}"
    )
    assert results[120].category is Category.data_quality and "username" in results[120].message
    # two people, one username: the first row keeps it, the second is told whose it is (as the
    # single path would say when the first was delivered before it)
    assert results[170].message == "created"
    assert results[171].category is Category.data_quality
    assert results[171].message == (
        f"username 'p00171' belongs to Moodle user {user_id(site, 'p00171')} whose idnumber is "
        "'E99999', not 'E00171'"
    )
    assert results[170].lms_user_id == user_id(site, "p00171")
    for n, result in enumerate(results):
        if n not in bad:
            assert (result.message, result.lms_user_id) == (
                "created",
                user_id(site, f"p{n:05d}"),
            )
    assert len([u for u in site.users.values() if u.username.startswith("p0")]) == 197
    # each journal holds the calls its person took part in: the holder's lookup is 50's alone
    assert "core_user_get_users" in [c["function"] for c in results[50].detail["calls"]]
    assert "core_user_get_users" not in [c["function"] for c in results[0].detail["calls"]]
    assert results[0].detail["calls"][2] == {
        "function": "core_user_create_users",
        "errorcode": "invalidparameter",
        "batch": 199,
    }
    # the chunk of 199, then for each of the two bad rows two halves a level, 8 levels down
    assert site.calls["core_user_create_users"] <= 1 + 2 * 2 * 8


async def test_batch_transient_failure_retries_every_row(
    site: MoodleSite, target: MoodleTarget
) -> None:
    site.unavailable["core_user_create_users"] = 1
    people = [person(n) for n in range(50)]
    results = await target.deliver_many([upsert(p) for p in people])
    assert {(r.status, r.category) for r in results} == {(Status.retry, Category.transient)}
    assert results[0].retry_after == 1.0
    assert results[0].detail["calls"][-1] == {
        "function": "core_user_create_users",
        "http": 503,
        "batch": 50,
    }
    assert not [u for u in site.users.values() if u.username.startswith("p0")]
    again = await target.deliver_many([upsert(p) for p in people])  # the relay's retry
    assert {r.message for r in again} == {"created"}


async def test_batch_chunks_under_max_input_vars(app: Starlette, site: MoodleSite) -> None:
    site.max_input_vars = 300
    target = moodle(app, max_input_vars=300)
    people = [person(n) for n in range(60)]
    results = await target.deliver_many([upsert(p) for p in people])
    await target.aclose()
    assert {r.message for r in results} == {"created"}
    # 9 form fields a row (the custom field two): 33 rows a call under 300 - 3
    assert site.calls["core_user_create_users"] == 2
    assert max(r.detail["batch"] for r in results) == 33
    for n in (0, 32, 33, 59):  # nobody truncated: every field arrived
        made = site.user_named(f"p{n:05d}")
        assert made is not None and made.customfields == {"title": "Analyst"}
        assert made.fields["department"] == "Claims"


async def test_batch_size_option_caps_the_rows_of_a_call(app: Starlette, site: MoodleSite) -> None:
    target = moodle(app, batch_size=25)
    results = await target.deliver_many([upsert(person(n)) for n in range(60)])
    await target.aclose()
    assert {r.message for r in results} == {"created"}
    assert site.calls["core_user_create_users"] == 3


async def test_batch_site_below_the_targets_max_input_vars_is_split(
    site: MoodleSite, target: MoodleTarget
) -> None:
    """PHP truncates what is past the site's max_input_vars ("Missing required key"): the
    chunk is split until it fits, nobody goes dead."""
    site.max_input_vars = 1000
    results = await target.deliver_many([upsert(person(n)) for n in range(150)])
    assert {r.message for r in results} == {"created"}
    assert site.calls["core_user_create_users"] == 1 + 2  # 1353 fields, then 678 and 678


async def test_batch_update_warnings_name_their_person(
    site: MoodleSite, target: MoodleTarget
) -> None:
    people = [person(n) for n in range(6)]
    made = await target.deliver_many([upsert(p) for p in people])
    ids = [str(r.lms_user_id) for r in made]
    other = site.add_user("other", email="taken@example.com", idnumber="X1")
    changed = [
        person(0, lastname="Renamed"),
        person(1, email="taken@example.com"),  # another account holds it
        person(2),  # unchanged
        person(3, username="other"),  # another account's username: the UPDATE fails
        person(4, department="Sales", title="Lead"),
        person(5, email="p5@example.com"),
    ]
    before = calls(site)
    results = await target.deliver_many([upsert(p, i) for p, i in zip(changed, ids, strict=True)])
    assert statuses(results) == ["done", "dead", "done", "dead", "done", "done"]
    assert [r.message for r in results][::2] == ["updated", "up to date", "updated"]
    assert results[1].category is Category.data_quality
    assert results[1].message.startswith(
        f"email taken@example.com is already used by Moodle user {other.id}"
    )
    assert results[3].message == f"username other is already used by Moodle user {other.id}"
    assert [r.lms_user_id for r in results] == ids
    assert results[4].detail["confirmed"]["customfields"] == {"title": "Lead"}
    # one lookup by id, one update, one read-back; the two refusals looked up the holders
    assert site.calls["core_user_update_users"] == 1
    assert calls(site) - before == 3 + 2
    user = site.users[int(ids[0])]
    assert user.lastname == "Renamed" and site.users[int(ids[1])].email == "p00001@example.com"


async def test_batch_cohort_warnings_name_their_member(
    site: MoodleSite, target: MoodleTarget
) -> None:
    members = [site.add_user(f"m{n}", email=f"m{n}@example.com") for n in range(8)]
    staff = next(c for c in site.cohorts.values() if c.idnumber == "ALLSTAFF")
    site.add_member(staff.id, members[2].id)
    site.add_member(staff.id, members[5].id)
    deliveries = [
        intent("add_cohort_member", str(m.id), "ALLSTAFF", n) for n, m in enumerate(members)
    ]
    deliveries[6] = intent("add_cohort_member", str(members[6].id), "NOSUCH", 6)
    deliveries[7] = intent("add_cohort_member", "99999", "ALLSTAFF", 7)  # a stale link
    results = await target.deliver_many(deliveries)
    assert statuses(results) == ["done"] * 6 + ["dead"] * 2
    assert [r.message for r in results[:6]] == [
        "added to cohort ALLSTAFF",
        "added to cohort ALLSTAFF",
        "already in cohort ALLSTAFF",
        "added to cohort ALLSTAFF",
        "added to cohort ALLSTAFF",
        "already in cohort ALLSTAFF",
    ]
    assert results[6].message == (
        "core_cohort_add_cohort_members: 2: cohort idnumber=NOSUCH not exists"
    )
    assert results[7].message == "core_cohort_add_cohort_members: 2: user id=99999 not exists"
    assert {r.category for r in results[6:]} == {Category.configuration}
    assert site.calls == {"core_cohort_add_cohort_members": 1}
    assert {u for c, u in site.members if c == staff.id} == {m.id for m in members[:6]}

    leaving = [
        intent("remove_cohort_member", str(m.id), "ALLSTAFF", n) for n, m in enumerate(members[:6])
    ]
    removed = await target.deliver_many(leaving)
    assert {r.message for r in removed} == {"removed from cohort ALLSTAFF"}
    assert site.calls["core_cohort_delete_cohort_members"] == 1
    assert not [m for m in site.members if m[0] == staff.id]


async def test_batch_mixed_kinds_keep_their_order(site: MoodleSite, target: MoodleTarget) -> None:
    known = [site.add_user(f"k{n}", email=f"k{n}@example.com") for n in range(6)]
    suspended = site.add_user("k9", email="k9@example.com", suspended=True)
    ids = [str(u.id) for u in known]
    deliveries = [
        upsert(person(1)),
        intent("enrol", ids[0], "BEN-2026", 10),
        intent("add_cohort_member", ids[1], "MANAGERS", 11),
        upsert(person(2)),
        intent("enrol", ids[2], "NO-SUCH-COURSE", 12),
        intent("suspend_account", ids[3], None, 13),
        intent("reactivate_account", str(suspended.id), None, 14),
        intent("enrol", ids[4], "ONBOARD-101", 15),
        intent("unenrol", ids[5], "BEN-2026", 16),
        intent("suspend_enrolment", None, "BEN-2026", 17),  # nobody to find
    ]
    results = await target.deliver_many(deliveries)
    assert [r.message for r in results] == [
        "created",
        "enrolled in BEN-2026",
        "added to cohort MANAGERS",
        "created",
        "no Moodle course with idnumber or shortname 'NO-SUCH-COURSE'",
        "suspended",
        "reactivated",
        "enrolled in ONBOARD-101",
        "unenrolled from BEN-2026",
        "no account: nothing to suspend",
    ]
    assert [r.lms_user_id for r in results] == [
        user_id(site, "p00001"),
        ids[0],
        ids[1],
        user_id(site, "p00002"),
        ids[2],
        ids[3],
        str(suspended.id),
        ids[4],
        ids[5],
        None,
    ]
    assert site.users[known[3].id].suspended and not suspended.suspended
    assert site.calls["core_user_create_users"] == 1
    assert site.calls["enrol_manual_enrol_users"] == 1  # two courses, one call
    assert site.calls["core_user_update_users"] == 1  # a suspension and a reactivation


async def test_batch_suspensions_and_enrolment_changes(
    site: MoodleSite, target: MoodleTarget
) -> None:
    people = [site.add_user(f"s{n}", email=f"s{n}@example.com") for n in range(10)]
    ids = [str(p.id) for p in people]
    enrolled = await target.deliver_many(
        [intent("enrol", i, "BEN-2026", n) for n, i in enumerate(ids)]
    )
    assert {r.message for r in enrolled} == {"enrolled in BEN-2026"}
    suspend = [intent("suspend_account", i, None, n) for n, i in enumerate(ids)]
    suspend[9] = intent("suspend_account", None, None, 99)  # no such account
    results = await target.deliver_many(suspend)
    assert [r.message for r in results] == ["suspended"] * 9 + ["no account to suspend"]
    assert site.calls["core_user_update_users"] == 1
    assert (await target.deliver_many(suspend[:2]))[0].message == "already suspended"
    paused = await target.deliver_many(
        [intent("suspend_enrolment", i, "BEN-2026", n) for n, i in enumerate(ids[:5])]
    )
    assert {r.message for r in paused} == {"enrolment in BEN-2026 suspended"}
    left = await target.deliver_many(
        [intent("unenrol", i, "BEN-2026", n) for n, i in enumerate(ids[5:])]
    )
    assert {r.message for r in left} == {"unenrolled from BEN-2026"}
    states = {
        e["userid"]: e["status"] for e in site.snapshot()["enrolments"] if e["course"] == "BEN-2026"
    }
    assert states == {p.id: "suspended" for p in people[:5]}
    assert site.calls["enrol_manual_enrol_users"] == 2
    assert site.calls["enrol_manual_unenrol_users"] == 1


async def test_batch_enrolment_refused_for_one_row_only(
    site: MoodleSite, target: MoodleTarget
) -> None:
    people = [site.add_user(f"e{n}", email=f"e{n}@example.com") for n in range(16)]
    deliveries = [intent("enrol", str(p.id), "BEN-2026", n) for n, p in enumerate(people)]
    deliveries[9] = intent("enrol", "99999", "BEN-2026", 9)  # a stale link
    results = await target.deliver_many(deliveries)
    assert [n for n, r in enumerate(results) if r.status is Status.dead] == [9]
    assert results[9].lms_user_id == "99999"
    assert results[9].detail["calls"][-1]["batch"] == 1
    assert len([e for e in site.snapshot()["enrolments"] if e["course"] == "BEN-2026"]) == 15


def test_batch_options_are_checked(app: Starlette) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        moodle(app, batch_size=0)
    assert moodle(app, max_input_vars="9000").max_input_vars == 9000


# -- the pure core -----------------------------------------------------------------------------


def member(cohort: str, user: int) -> dict[str, Any]:
    return {
        "cohorttype": {"type": "idnumber", "value": cohort},
        "usertype": {"type": "id", "value": user},
    }


def test_member_warnings_name_the_member_of_moodles_messages() -> None:
    members = [member("A", 1), member("A", 2), member("B", 3), member("B", 4)]
    already = {"warningcode": "3", "message": "record already exists: cohort(idnumber:A id:2)"}
    no_user = {"warningcode": "2", "message": "user id=4 not exists"}
    no_cohort = {"warningcode": "2", "message": "cohort idnumber=B not exists"}
    assert member_warnings(members, []) == [None] * 4
    assert member_warnings(members, [already, no_user]) == [None, already, None, no_user]
    assert member_warnings(members, [no_cohort, no_cohort]) == [None, None, no_cohort, no_cohort]
    # a warning about no member sent, or one Moodle words otherwise: cannot be told apart
    assert (
        member_warnings(members, [{"warningcode": "2", "message": "user id=9 not exists"}]) is None
    )
    assert member_warnings(members, [{"warningcode": "1", "message": "invalid parameter"}]) is None


def test_chunk_caps_rows_and_fields() -> None:
    rows = [{"userid": n, "courseid": 2} for n in range(10)]
    assert [len(c) for c in chunk("enrolments", rows, 1000, limit=4)] == [4, 4, 2]
    assert [len(c) for c in chunk("enrolments", rows, 6)] == [3, 3, 3, 1]  # 2 fields a row
    assert chunk("values", ["a", "b", "c"], 2) == [["a", "b"], ["c"]]
