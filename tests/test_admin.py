"""The admin page (``/admin``) through the real ASGI app on SQLite and PostgreSQL.

Its data is made by real code paths: people provisioned over SCIM, delivered by the relay to
the Moodle simulator, which refuses one account (another holds its email: a dead letter),
and a deactivation past the rule file's ``safety`` threshold, which the brake holds in a run.
The page must keep everyone out without an ``admin`` token, refuse a form without its CSRF
token, and act as ``bridge errors retry`` and ``bridge approve`` do, journalled as the admin.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.admin.app import admin_routes
from bridge.admin.charts import age_bucket
from bridge.admin.charts import completion_bars
from bridge.admin.charts import freshness_columns
from bridge.admin.session import Session
from bridge.admin.session import read_session
from bridge.admin.session import session_key
from bridge.admin.views import changes
from bridge.auth.tokens import ADMIN
from bridge.auth.tokens import READ
from bridge.auth.tokens import WRITE
from bridge.config import Settings
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import journal
from bridge.store import outbox
from bridge.store import runs
from bridge.store import tokens
from bridge.store.engine import Database
from tests.conftest import PATCH
from tests.conftest import TOKEN
from tests.conftest import app_client
from tests.conftest import employee
from tests.conftest import shipped_rules
from tests.pilots import uncapped
from tests.test_three_states import START
from tests.test_three_states import Clock
from tests.test_three_states import World

SHIPPED_SAFETY = "safety:\n  max_removals: 20\n  max_removals_percent: 10\n"
HOLD_EVERY_REMOVAL = "safety:\n  max_removals: 0\n"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')

# -- the pure parts: session, charts -------------------------------------------------------------


def test_a_session_cookie_is_read_back_only_as_signed_and_until_it_expires() -> None:
    key = session_key("s" * 64)
    session = Session.start("ann", "d" * 64, stored=True, now=START)
    cookie = session.cookie(key)
    assert read_session(cookie, key, START) == session
    assert read_session(cookie, session_key("t" * 64), START) is None, "another server's key"
    payload, mac = cookie.split(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    assert read_session(f"{forged}.{mac}", key, START) is None
    assert read_session(cookie, key, session.expires) is None, "expired"
    assert session.csrf(key) != Session.start("ann", "d" * 64, stored=True, now=START).csrf(key)


def test_completion_bars_stack_to_the_full_width_and_freshness_buckets_by_age() -> None:
    from datetime import timedelta

    bars = completion_bars(
        {
            "Claims": {"complete": 3, "in_progress": 1, "not_enrolled": 0, "desired": 4},
            "Sales": {"not_enrolled": 2},
        },
        width=400,
    )
    claims, sales = bars
    assert (claims.total, claims.complete_percent) == (4, 75)
    assert [(s.status, s.x, s.width) for s in claims.segments] == [
        ("complete", 0.0, 300.0),
        ("in_progress", 300.0, 100.0),
    ]
    assert (sales.y, sales.complete_percent, sales.segments[0].width) == (24.0, 0, 400.0)
    assert age_bucket(timedelta(minutes=59)) == "< 1 h"
    assert age_bucket(timedelta(hours=1)) == "1–24 h"
    assert age_bucket(timedelta(days=40)) == "> 30 d"
    columns = freshness_columns([timedelta(minutes=5)] * 2 + [timedelta(days=3), None])
    assert [(c.label, c.count) for c in columns] == [
        ("< 1 h", 2),
        ("1–24 h", 0),
        ("1–7 d", 1),
        ("7–30 d", 0),
        ("> 30 d", 0),
        ("never read", 1),
    ]
    assert columns[0].height == 120.0 and columns[2].height == 60.0


def test_a_journal_line_says_what_a_write_changed() -> None:
    before = {"userName": "a", "active": True, "emails": [{"value": "a@x"}], "meta": {"v": 1}}
    after = {"userName": "b", "active": False, "emails": [], "meta": {"v": 2}, "title": "Dr"}
    assert changes(before, after) == [
        "active: true → false",
        "emails changed",
        "title: (none) → Dr",
        "userName: a → b",
    ]
    assert changes(before, after, shown=2) == ["active: true → false", "emails changed", "+2 more"]
    assert changes(None, after) == [] and changes(before, before) == []


# -- the bridge with an admin page, and its data ---------------------------------------------------


@dataclass
class Site:
    """The bridge's app with the admin page mounted, over a world with a dead letter (emp30,
    whose email a hand-made Moodle account holds) and a held removal (emp31 deactivated)."""

    app: Any
    db: Database
    world: World
    ids: dict[int, str]
    admin_token: str
    scim_token: str
    held_run: str
    dead: int


def admin_rules(directory: Path, simulator_url: str | None = None) -> Path:
    """The shipped rules, uncapped, whose brake holds every removal."""
    rules = uncapped(shipped_rules(directory, simulator_url))
    path = rules / "benefits-2026.yaml"
    text = path.read_text()
    assert SHIPPED_SAFETY in text
    path.write_text(text.replace(SHIPPED_SAFETY, HOLD_EVERY_REMOVAL))
    return rules


def bridge_app(db: Database, catalog: Catalog, settings: Settings, world: World) -> Any:
    """The SCIM app, as ``bridge serve`` builds it, with the admin page's routes added."""
    provisioner = world.ruled
    authenticate = Authenticator(db, env_token=TOKEN)
    app = create_app(provisioner, catalog, settings, authenticate)
    app.router.routes.extend(admin_routes(provisioner, world.book.current, settings, authenticate))
    return app


def make_tokens(db: Database) -> tuple[str, str]:
    """An ``admin`` token named ann and a SCIM token named okta (no admin scope)."""
    admin, scim = f"brg_{secrets.token_urlsafe(16)}", f"brg_{secrets.token_urlsafe(16)}"
    with db.write() as conn:
        tokens.create(conn, "ann", admin, frozenset({ADMIN}), START)
        tokens.create(conn, "okta", scim, frozenset({READ, WRITE}), START)
    return admin, scim


async def build_site(
    db: Database, catalog: Catalog, settings: Settings, rules: Path, simulator: Any = None
) -> Site:
    book = RuleBook(rules, lambda d: check_directory(d, catalog))
    book.load()
    world = World(db, catalog, book, Clock(), simulator or create_simulator(Knobs(seed=5)))
    app = bridge_app(db, catalog, settings, world)
    world.stale_account(30)
    ids: dict[int, str] = {}
    async with app_client(app) as scim:
        for number, department in ((30, "Claims"), (31, "Claims"), (32, "Claims")):
            answer = await scim.post(
                "/Users", json=employee(number, codes=["BEN_CHOICE_2026"], department=department)
            )
            assert answer.status_code == 201, answer.text
            ids[number] = answer.json()["id"]
        await world.deliver()
        deactivate = {"op": "replace", "path": "active", "value": False}
        answer = await scim.patch(
            f"/Users/{ids[31]}", json={"schemas": [PATCH], "Operations": [deactivate]}
        )
        assert answer.status_code == 200, answer.text
    with db.read() as conn:
        (dead,) = outbox.dead_letters(conn)
        held = [row for row in outbox.unsettled(conn) if row["status"] == "quarantined"]
    assert dead["ordering_key"] == ids[30] and dead["intent"]["kind"] == "upsert_account"
    assert [(row["ordering_key"], row["intent"]["kind"]) for row in held] == [
        (ids[31], "suspend_account")
    ]
    admin, scim_token = make_tokens(db)
    return Site(app, db, world, ids, admin, scim_token, str(held[0]["run_id"]), int(dead["id"]))


@pytest.fixture
async def site(db: Database, catalog: Catalog, settings: Settings, tmp_path: Path) -> Site:
    return await build_site(db, catalog, settings, admin_rules(tmp_path))


def browser(app: Any) -> httpx.AsyncClient:
    """A client keeping cookies, following no redirect on its own."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge.test")


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, page.text
    return found.group(1)


async def log_in(client: httpx.AsyncClient, token: str, then: str = "/admin/") -> httpx.Response:
    form = await client.get("/admin/login", params={"next": then})
    assert form.status_code == 200
    return await client.post(
        "/admin/login", data={"token": token, "csrf": csrf_of(form), "next": then}
    )


def status_of(db: Database, row_id: int) -> tuple[str, int]:
    with db.read() as conn:
        row = outbox.get(conn, row_id)
    assert row is not None
    return row["status"], row["attempts"]


# -- logging in ----------------------------------------------------------------------------------


async def test_every_page_redirects_to_the_login_and_back(site: Site) -> None:
    async with browser(site.app) as client:
        bare = await client.get("/admin")
        assert (bare.status_code, bare.headers["location"]) == (307, "/admin/")
        for path in ("/admin/", "/admin/journal", f"/admin/people/{site.ids[30]}", "/admin/runs"):
            answer = await client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/admin/login?next=")
        answer = await client.get("/admin/dead-letters", params={"category": "data_quality"})
        assert answer.headers["location"] == (
            "/admin/login?next=/admin/dead-letters%3Fcategory%3Ddata_quality"
        )
        # an action without a session does nothing
        refused = await client.post(f"/admin/dead-letters/{site.dead}/retry", data={"csrf": "x"})
        assert refused.status_code == 303 and refused.headers["location"] == "/admin/login"
        assert status_of(site.db, site.dead) == ("dead", 1)

        landed = await log_in(
            client, site.admin_token, then="/admin/dead-letters?category=data_quality"
        )
        assert landed.status_code == 303
        assert landed.headers["location"] == "/admin/dead-letters?category=data_quality"
        cookie = landed.headers["set-cookie"]
        assert "bridge_admin=" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie and "Path=/admin" in cookie
        assert "Secure" not in cookie, "plain http here: a Secure cookie would never come back"
        page = await client.get("/admin/dead-letters")
        assert page.status_code == 200 and 'id="who">ann<' in page.text
        crafted = await client.get("/admin/", params={"problem": "paste your token at evil"})
        assert "evil" not in crafted.text, "only the messages the page signed are shown"
        assert "default-src 'none'" in page.headers["content-security-policy"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=site.app), base_url="https://bridge.test"
    ) as secure:
        over_https = await log_in(secure, site.admin_token)
        assert "Secure" in over_https.headers["set-cookie"]
        style = await secure.get("/admin/static/admin.css")
        assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    async with browser(site.app) as fresh:  # never sent anywhere but this page
        off_site = await log_in(fresh, site.admin_token, then="//evil.example/x")
        assert off_site.headers["location"] == "/admin/"


async def test_a_bad_token_or_one_without_the_admin_scope_is_refused(site: Site) -> None:
    async with browser(site.app) as client:
        wrong = await log_in(client, "brg_not-a-token")
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert "bridge_admin=" not in wrong.headers.get("set-cookie", "")
        scim_only = await log_in(client, site.scim_token)
        assert scim_only.status_code == 403
        assert "The token &#39;okta&#39; lacks the admin scope" in scim_only.text
        assert (await client.get("/admin/")).status_code == 303
        # a login form posted without its own CSRF token (another site's form)
        forged = await client.post("/admin/login", data={"token": site.admin_token})
        assert forged.status_code == 403
        assert (await client.get("/admin/")).status_code == 303

        assert (await log_in(client, site.admin_token)).status_code == 303
        home = await client.get("/admin/")
        assert home.status_code == 200
        assert 'id="dead-count">1<' in home.text and 'id="awaiting-count">1<' in home.text
        assert "emp31@example.com</a>" in home.text  # the latest entries name their person
        with site.db.write() as conn:
            assert tokens.revoke(conn, "ann", START)
        assert (await client.get("/admin/")).status_code == 303, "revoking the token ends it"


async def test_logout_ends_the_session(site: Site) -> None:
    async with browser(site.app) as client:
        await log_in(client, site.admin_token)
        home = await client.get("/admin/")
        out = await client.post("/admin/logout", data={"csrf": csrf_of(home)})
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
        assert (await client.get("/admin/")).status_code == 303


async def test_an_action_without_its_csrf_token_is_403_and_does_nothing(site: Site) -> None:
    async with browser(site.app) as client:
        await log_in(client, site.admin_token)
        page = await client.get("/admin/dead-letters")
        for data in ({}, {"csrf": "forged"}):
            refused = await client.post(f"/admin/dead-letters/{site.dead}/retry", data=data)
            assert refused.status_code == 403, data
        refused = await client.post(f"/admin/runs/{site.held_run}/approve")
        assert refused.status_code == 403
        assert status_of(site.db, site.dead) == ("dead", 1)
        with site.db.read() as conn:
            assert runs.get(conn, site.held_run)["status"] == "quarantined"  # type: ignore[index]
        # another session's token is no good either
        async with browser(site.app) as other:
            await log_in(other, site.admin_token)
            theirs = csrf_of(await other.get("/admin/dead-letters"))
        assert theirs != csrf_of(page)
        refused = await client.post(f"/admin/dead-letters/{site.dead}/retry", data={"csrf": theirs})
        assert refused.status_code == 403


# -- the actions -----------------------------------------------------------------------------------


async def test_retry_a_dead_letter_requeues_it_journalled_as_the_admin(site: Site) -> None:
    async with browser(site.app) as client:
        await log_in(client, site.admin_token)
        page = await client.get("/admin/dead-letters")
        assert f'data-outbox="{site.dead}"' in page.text
        assert "emp30@example.com" in page.text and "upsert_account" in page.text
        assert "2<div" in page.text, "the enrolment and cohort held back behind it"
        done = await client.post(
            f"/admin/dead-letters/{site.dead}/retry", data={"csrf": csrf_of(page)}
        )
        assert done.status_code == 303
        after = await client.get(done.headers["location"])
        assert f"dead letter #{site.dead} queued again" in after.text
        assert 'id="no-dead-letters"' in after.text
        again = await client.post(
            f"/admin/dead-letters/{site.dead}/retry", data={"csrf": csrf_of(page)}
        )
        shown = await client.get(again.headers["location"])
        assert f"outbox row {site.dead} is pending, not a dead letter" in shown.text

    assert status_of(site.db, site.dead) == ("pending", 0)
    with site.db.read() as conn:
        (entry,) = [e for e in journal.read(conn) if e.op == "errors.retry"]
    assert (entry.actor, entry.resource_id) == ("ann", site.ids[30])
    assert entry.detail is not None and entry.detail["outbox"] == site.dead
    assert entry.detail["category"] == "data_quality"
    # the hand-made account is fixed in Moodle: the retried create goes through
    site.world.site.user_named("old.account30").email = "old30@example.com"
    await site.world.deliver()
    assert status_of(site.db, site.dead)[0] == "done"


async def test_skip_a_dead_letter_lets_the_persons_later_intents_go(site: Site) -> None:
    async with browser(site.app) as client:
        await log_in(client, site.admin_token)
        page = await client.get("/admin/dead-letters")
        done = await client.post(
            f"/admin/dead-letters/{site.dead}/skip", data={"csrf": csrf_of(page)}
        )
        assert "skipped" in (await client.get(done.headers["location"])).text
    assert status_of(site.db, site.dead)[0] == "skipped"
    with site.db.read() as conn:
        (entry,) = [e for e in journal.read(conn) if e.op == "errors.skip"]
    assert entry.actor == "ann"


async def test_retry_every_dead_letter_of_a_category(site: Site) -> None:
    async with browser(site.app) as client:
        await log_in(client, site.admin_token)
        page = await client.get("/admin/dead-letters", params={"category": "data_quality"})
        assert "Retry every dead letter of data quality" in page.text
        token = csrf_of(page)

        async def retry_all(category: str) -> str:
            done = await client.post(
                "/admin/dead-letters/retry", data={"csrf": token, "category": category}
            )
            assert done.status_code == 303
            return (await client.get(done.headers["location"])).text

        assert "no dead letters to retry" in await retry_all("configuration")
        assert "no category &#39;bogus&#39;" in await retry_all("bogus")
        assert status_of(site.db, site.dead) == ("dead", 1)
        assert "1 dead letter(s) queued again" in await retry_all("data_quality")
    assert status_of(site.db, site.dead) == ("pending", 0)
    with site.db.read() as conn:
        (entry,) = [e for e in journal.read(conn) if e.op == "errors.retry"]
    assert (entry.actor, entry.resource_id) == ("ann", site.ids[30])


async def test_approve_a_held_run_releases_it_to_the_lms(site: Site) -> None:
    async with browser(site.app) as client:
        await log_in(client, site.admin_token)
        listed = await client.get("/admin/runs")
        assert f"/admin/runs/{site.held_run}" in listed.text
        page = await client.get(f"/admin/runs/{site.held_run}")
        assert page.status_code == 200
        assert 'id="run-status">quarantined<' in page.text
        assert "emp31@example.com" in page.text and "suspend_account" in page.text
        assert "Approve: send 1 intent(s)" in page.text
        done = await client.post(
            f"/admin/runs/{site.held_run}/approve", data={"csrf": csrf_of(page)}
        )
        after = await client.get(done.headers["location"])
        assert f"run {site.held_run} approved: 1 intent(s) released" in after.text
        assert 'id="run-status">approved<' in after.text and 'id="approve"' not in after.text
        twice = await client.post(
            f"/admin/runs/{site.held_run}/approve", data={"csrf": csrf_of(page)}
        )
        shown = await client.get(twice.headers["location"])
        assert "is approved, not quarantined" in shown.text
        missing = await client.get("/admin/runs/no-such-run")
        assert missing.status_code == 404 and "no run" in missing.text

    with site.db.read() as conn:
        run = runs.get(conn, site.held_run)
        (entry,) = [e for e in journal.read(conn) if e.op == "approve"]
        rows = outbox.of_run(conn, site.held_run)
    assert run is not None and (run["status"], run["approved_by"]) == ("approved", "ann")
    assert entry.actor == "ann" and entry.detail == {
        "run": site.held_run,
        "kind": "held",
        "target": "moodle",
        "released": 1,
    }
    assert [row["status"] for row in rows] == ["pending"]
    await site.world.deliver()
    assert site.world.site.user_named("emp31@example.com").suspended


async def test_reject_a_held_run_with_a_reason(site: Site) -> None:
    async with browser(site.app) as client:
        await log_in(client, site.admin_token)
        page = await client.get(f"/admin/runs/{site.held_run}")
        done = await client.post(
            f"/admin/runs/{site.held_run}/reject",
            data={"csrf": csrf_of(page), "reason": "IdP scoping mistake"},
        )
        assert "1 intent(s) cancelled" in (await client.get(done.headers["location"])).text
    with site.db.read() as conn:
        (entry,) = [e for e in journal.read(conn) if e.op == "reject"]
        assert runs.get(conn, site.held_run)["status"] == "rejected"  # type: ignore[index]
    assert entry.actor == "ann" and entry.detail is not None
    assert entry.detail["reason"] == "IdP scoping mistake"


# -- the views -------------------------------------------------------------------------------------


async def test_a_persons_timeline_shows_writes_verdicts_intents_answers_and_training(
    site: Site,
) -> None:
    person = site.ids[30]
    async with browser(site.app) as client:
        await log_in(client, site.admin_token)
        for key in ("emp30@example.com", "E00030", "EMP30@EXAMPLE.COM", person):
            found = await client.get("/admin/people", params={"q": key})
            assert found.status_code == 303, key
            assert found.headers["location"] == f"/admin/people/{person}"
        several = await client.get("/admin/people", params={"q": "emp3"})
        assert several.status_code == 200
        assert all(f"/admin/people/{site.ids[n]}" in several.text for n in (30, 31, 32))
        nobody = await client.get("/admin/people", params={"q": "nobody@example.com"})
        assert 'id="nobody"' in nobody.text

        page = (await client.get(f"/admin/people/{person}")).text
    assert 'id="person-name">emp30@example.com<' in page
    # the SCIM write, by the token that made it
    assert re.search(r"BRIDGE_SCIM_TOKEN</td>\s*<td><code>create</code>", page)
    # the rules' verdicts: in scope, the course wanted
    verdicts = page.split('id="verdicts"')[1].split("</table>")[0]
    assert "benefits-2026" in verdicts and "✓ enrolment BEN-2026" in verdicts
    # the outbox: the refused create, the two intents behind it
    intents = page.split('id="intents"')[1].split("</table>")[0]
    assert re.search(r"upsert_account\s*</td>\s*<td>dead \(data_quality\)", intents)
    assert intents.count("<td>pending</td>") == 2
    # the LMS's answer in the timeline, with its message
    assert "deliver.dead" in page and "email" in page.split("deliver.dead")[1][:600].lower()
    # training: desired, never enrolled
    training = page.split('id="training"')[1].split("</table>")[0]
    assert "BEN-2026" in training and "not enrolled" in training
    # and nobody else's entries
    assert site.ids[31] not in page.split("<h2>Timeline</h2>")[1]


async def test_the_journal_filters_by_person_actor_op_and_since(site: Site) -> None:
    async with browser(site.app) as client:
        await log_in(client, site.admin_token)
        page = await client.get("/admin/dead-letters")
        await client.post(f"/admin/dead-letters/{site.dead}/retry", data={"csrf": csrf_of(page)})

        def seqs(text: str) -> list[int]:
            return [int(s) for s in re.findall(r'data-seq="(\d+)"', text)]

        with site.db.read() as conn:
            every = journal.read(conn)
        everything = seqs((await client.get("/admin/journal")).text)
        assert everything == sorted((e.seq for e in every), reverse=True)  # type: ignore[misc]
        mine = seqs((await client.get("/admin/journal", params={"actor": "ann"})).text)
        assert mine == [e.seq for e in every if e.actor == "ann"]
        delivered = seqs((await client.get("/admin/journal", params={"op": "deliver"})).text)
        assert delivered and delivered == sorted(
            (e.seq for e in every if e.op.startswith("deliver.")),  # type: ignore[misc]
            reverse=True,
        )
        page = (await client.get("/admin/journal", params={"person": "E00031"})).text
        assert set(seqs(page)) == {e.seq for e in every if e.resource_id == site.ids[31]}
        assert re.search(r"<code>patch</code>.*?active: \(none\) → false", page, re.DOTALL)
        later = seqs((await client.get("/admin/journal", params={"since": "2099-01-01"})).text)
        assert later == []
        since = seqs((await client.get("/admin/journal", params={"since": "2000-01-01"})).text)
        assert since == everything
        bad = await client.get("/admin/journal", params={"since": "yesterday"})
        assert "not a date or time" in bad.text


async def test_the_training_report_draws_completion_per_department(site: Site) -> None:
    async with browser(site.app) as client:
        await log_in(client, site.admin_token)
        page = (await client.get("/admin/training")).text
    chart = page.split('id="completion-chart"')[1].split("</svg>")[0]
    assert ">Claims<" in chart and "0 % of 3" in chart
    # emp30 never enrolled (their account is a dead letter); emp31 and emp32 enrolled, not read
    assert "Claims: 1 not enrolled" in chart and "Claims: 2 not read yet" in chart
    histogram = page.split('id="freshness-chart"')[1].split("</svg>")[0]
    assert "never read: 2" in histogram
    assert "Completion never read" in page


async def test_bridge_serve_serves_the_admin_page_beside_scim_metrics_and_probes(
    database_url: str,
) -> None:
    """``build_app`` (what ``bridge serve`` runs) mounts ``/admin``: a visitor without a
    session is sent to its login form."""
    from bridge.cli.serving import build_app
    from tests.conftest import ROOT as root

    served = Settings(
        database_url=database_url,
        scim_token="t0ken",
        schemas_dir=root / "schemas",
        rules_dir=root / "rules",
        scheduler=False,
    )
    app = build_app(served, relay_in_process=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://b.test") as http:
        answer = await http.get("/admin/")
        assert answer.status_code in (302, 303, 307), answer.text
        assert "/admin/login" in answer.headers["location"]
        assert (await http.get(answer.headers["location"])).status_code == 200
        env_token = await log_in(http, "t0ken")  # BRIDGE_SCIM_TOKEN: the IdP's, SCIM only
        assert env_token.status_code == 403 and "lacks the admin scope" in env_token.text
    app.state.server.provisioner.db.dispose()
