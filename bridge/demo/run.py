"""``bridge demo``: the integration guide's 30-day, 200-person pilot, compressed into seconds.

A fresh SQLite database, the LMS simulator (Moodle web services) and the bridge, each served by
uvicorn on a free 127.0.0.1 port in a background thread, with the relay delivering beside them
— real HTTP on every hop, as in production. A deterministic HRIS sample of one department
(Claims) is provisioned over SCIM the way an IdP would, with the guide's edge cases (missing
emails, duplicate employee ids, non-standard role codes) and a few people of other departments;
the push fills none of the capped pilot's seats: an admin then draws the pilot (``bridge plan``
+ ``bridge apply``: seats by stable hash, never by arrival order) and the relay delivers it;
then a day-2 change (role codes added and removed, terminations) is sent as Entra-style PATCHes.

The bridge's app, rule book and relay are built by the composition root and passed in
(:class:`Wiring`, from ``bridge/cli/demo.py``): this package sits below the CLI and never
imports it. ``run_demo`` returns what it read back as a plain dict (:mod:`bridge.demo.readback`;
:func:`bridge.demo.report.render` prints it), so tests check the numbers against the simulator.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console

from bridge.config import Settings
from bridge.demo.phases import Demo
from bridge.demo.phases import phase_summary
from bridge.demo.readback import TARGET
from bridge.demo.readback import bridge_report
from bridge.demo.readback import errors_by_category
from bridge.demo.readback import last_seq
from bridge.demo.readback import lms_report
from bridge.demo.readback import problems
from bridge.demo.sample import BENEFITS
from bridge.demo.sample import SEED
from bridge.demo.sample import Sample
from bridge.demo.sample import hr_sample
from bridge.demo.sample import role_patch
from bridge.demo.sample import termination_patch
from bridge.demo.servers import DemoError
from bridge.demo.servers import RelayThread
from bridge.demo.servers import Served
from bridge.lmssim import SIM_CANVAS_TOKEN
from bridge.lmssim import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.provision import Provisioner
from bridge.provision.planning import Planner
from bridge.provision.resources import now_utc
from bridge.relay import Relay
from bridge.rules.book import RuleBook
from bridge.rules.check import render_errors
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.schemas import Catalog
from bridge.schemas import load_catalog
from bridge.store import runs
from bridge.store.engine import Database


@dataclass(frozen=True)
class Wiring:
    """What the composition root builds for the demo, as ``bridge serve`` and ``bridge relay``
    would: the rule book (checked against the schemas), the bridge's ASGI app (without its own
    relay; ``app.state.server.provisioner`` is its provisioner) and a relay for the targets
    whose credentials ``env`` holds (None: no target can be built)."""

    rule_book: Callable[[Settings, Catalog], RuleBook]
    app: Callable[[Settings, RuleBook], Any]
    relay: Callable[[Database, RuleSet, Mapping[str, str], Settings], Relay | None]


def _repo_dir(name: str, configured: Path | None) -> Path:
    """``rules`` / ``schemas``: as given, else BRIDGE_* / the working directory, else the repo's."""
    candidates = [configured] if configured is not None else []
    try:
        defaults = Settings.from_env()
    except ValueError as exc:
        raise DemoError(str(exc)) from exc
    candidates.append(defaults.rules_dir if name == "rules" else defaults.schemas_dir)
    candidates.append(Path(__file__).resolve().parents[2] / name)
    for candidate in candidates:
        if candidate is not None and candidate.is_dir():
            return candidate.resolve()
    raise DemoError(f"no {name}/ directory found (run from the repository, or set BRIDGE_*)")


def demo_rules(source: Path, destination: Path, lms_url: str) -> Path:
    """A copy of the rules whose LMS targets point at the simulator."""
    shutil.copytree(source, destination)
    path = destination / "targets.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for target in (document.get("targets") or {}).values():
        if target.get("kind") in ("moodle", "canvas"):
            target["base_url"] = lms_url
    path.write_text(
        "# bridge demo: the targets point at the LMS simulator\n"
        + yaml.safe_dump(document, sort_keys=False),
        encoding="utf-8",
    )
    return destination


def _post(doc: dict[str, Any]) -> Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]:
    def call(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.post("/Users", content=json.dumps(doc))

    return call


def _patch(
    scim_id: str, body: dict[str, Any]
) -> Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]:
    def call(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.patch(f"/Users/{scim_id}", content=json.dumps(body))

    return call


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("scimType") or body)[:200]
    return str(body)[:200]


def run_demo(
    wiring: Wiring,
    *,
    people: int = 200,
    database: Path | None = None,
    workdir: Path | None = None,
    keep: bool = False,
    rules_dir: Path | None = None,
    schemas_dir: Path | None = None,
    seed: int = SEED,
    console: Console | None = None,
    concurrency: int = 16,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Run the pilot end to end and return what the bridge and the LMS hold, as plain data.

    ``database``: the SQLite file to create (it must not exist); by default ``bridge.db`` in a
    temporary directory, removed at the end unless ``keep``. ``workdir``: where the temporary
    directory goes. ``console``: where progress bars go (None: silent). ``wiring``: the
    bridge's rule book, app and relay, as the CLI builds them.
    """
    sample = hr_sample(people, seed)
    rules_source = _repo_dir("rules", rules_dir)
    schemas = _repo_dir("schemas", schemas_dir)
    if database is not None and database.exists():
        raise DemoError(f"{database} exists: the demo needs a fresh database (or no --database)")
    temp = Path(tempfile.mkdtemp(prefix="bridge-demo-", dir=workdir))
    db_path = (database or temp / "bridge.db").resolve()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    token = secrets.token_urlsafe(24)
    summary: dict[str, Any] = {
        "people": people,
        "seed": seed,
        "database": str(db_path),
        "database_url": f"sqlite:///{db_path}",
        "rules_dir": str(temp / "rules"),
        "schemas_dir": str(schemas),
        "kept": keep or database is not None,
        "rules_kept": keep,
    }
    db: Database | None = None
    try:
        simulator = create_simulator(Knobs(seed=seed))
        with Served(simulator, "LMS simulator") as lms:
            baseline = {
                u["id"] for u in httpx.get(f"{lms.url}/_sim/state").json()["moodle"]["users"]
            }
            rules = demo_rules(rules_source, temp / "rules", lms.url)
            settings = Settings(
                database_url=f"sqlite:///{db_path}",
                scim_token=token,
                schemas_dir=schemas,
                rules_dir=rules,
            )
            env = {"MOODLE_TOKEN": SIM_MOODLE_TOKEN, "CANVAS_TOKEN": SIM_CANVAS_TOKEN}
            catalog = load_catalog(schemas)
            try:
                book = wiring.rule_book(settings, catalog)
            except RuleErrors as exc:
                raise DemoError(
                    f"the rules do not check clean:\n{render_errors(exc.errors)}"
                ) from exc
            ruleset = book.current()
            if ruleset is None or not any(f.target == TARGET for f in ruleset.files):
                raise DemoError(f"no rule file of {rules_source} drives the {TARGET!r} target")
            app = wiring.app(settings, book)
            provisioner: Provisioner = app.state.server.provisioner
            db = provisioner.db
            relay = wiring.relay(db, ruleset, env, settings)
            if relay is None or TARGET not in relay.targets:
                raise DemoError(f"the {TARGET!r} target cannot be built from {rules}")
            with Served(app, "bridge") as bridge, RelayThread(relay):
                summary["bridge_url"] = f"{bridge.url}/scim/v2"
                summary["lms_url"] = lms.url
                if console is not None:
                    console.print(
                        f"LMS simulator (Moodle) at {lms.url}; the bridge at "
                        f"{bridge.url}/scim/v2, delivering to it; database {db_path}"
                    )
                demo = Demo(
                    db, bridge.url, token, console=console, concurrency=concurrency, timeout=timeout
                )
                summary.update(_provision(demo, sample, console))
                rule_file = next(f for f in ruleset.files if f.target == TARGET)
                summary["draw"] = _draw(demo, provisioner, catalog, book, rule_file, console)
                day_one_seq = last_seq(db)
                summary.update(_day_two(demo, sample, summary["scim_ids"], console))
                summary["brake"] = _brake(demo, provisioner, catalog, book, console)
                state = httpx.get(f"{lms.url}/_sim/state").json()
            summary["lms"] = lms_report(state, baseline)
            summary.update(bridge_report(db, provisioner, catalog, book, day_one_seq))
            summary["problems"] = problems(summary["rejected"], summary["attention"])
            summary["errors"] = errors_by_category(
                summary["problems"], summary["dead_letters_by_category"]
            )
            pilot = rule_file.scope.pilot
            summary["rule_file"] = rule_file.name
            summary["pilot"] = {
                "max_people": pilot.max_people if pilot else None,
                "ends": pilot.ends.isoformat() if pilot and pilot.ends else None,
                "ended": bool(pilot and pilot.ends and now_utc().date() > pilot.ends),
            }
    finally:
        if db is not None:
            db.dispose()
        if not keep:
            shutil.rmtree(temp, ignore_errors=True)
    del summary["scim_ids"]
    summary["seconds"] = round(time.monotonic() - started, 2)
    return summary


def _provision(demo: Demo, sample: Sample, console: Console | None) -> dict[str, Any]:
    """Day 1: every HR record POSTed; records repeating an employee id go in a second wave."""
    first = [r for r in sample.records if r.edge != "duplicate_id"]
    second = [r for r in sample.records if r.edge == "duplicate_id"]
    ordered = first + second
    if console is not None:
        console.rule(f"Day 1: {len(ordered)} HR records sent to the bridge, as Okta or Entra would")
    phase, responses = demo.run_phase(
        "day 1", [_post(r.scim()) for r in ordered], waves=[len(first)]
    )
    scim_ids: dict[str, str] = {}
    rejected: list[dict[str, Any]] = []
    for record, response in zip(ordered, responses, strict=True):
        if response.status_code == 201:
            scim_ids[record.external_id] = str(response.json()["id"])
        else:
            body = response.json() if response.content else {}
            rejected.append(
                {
                    "externalId": record.external_id,
                    "userName": record.user_name,
                    "status": response.status_code,
                    "scimType": body.get("scimType") if isinstance(body, dict) else None,
                    "detail": _error_detail(response),
                }
            )
    for item in rejected:  # who holds the id already: asked of the bridge
        if item["scimType"] == "uniqueness":
            found = demo.get("/Users", filter=f'externalId eq "{item["externalId"]}"')
            holders = [r.get("userName") for r in found.get("Resources", [])]
            item["held_by"] = holders[0] if holders else None
    return {
        "hr_records": len(sample.records),
        "pilot_department_records": len(sample.pilot),
        "other_department_records": len(sample.others),
        "day1": {**phase_summary(phase), "created": len(scim_ids)},
        "rejected": rejected,
        "scim_ids": scim_ids,
    }


def _draw(
    demo: Demo,
    provisioner: Provisioner,
    catalog: Catalog,
    book: RuleBook,
    rule_file: RuleFile,
    console: Console | None,
) -> dict[str, Any] | None:
    """Day 1, after the push: an admin draws the capped pilot — ``bridge plan`` + ``bridge
    apply`` over the stored population — and the relay delivers what the draw admitted.

    The push filled no seat (a capped pilot is drawn by stable hash, never filled in arrival
    order: bridge/rules/pilot.py). Without a cap every write admitted its person: no draw.
    """
    pilot = rule_file.scope.pilot
    if pilot is None or pilot.max_people is None:
        return None
    planner = Planner(demo.db, provisioner.store, catalog, book.current, now_utc)
    computed = planner.compute()
    assert computed.standing is not None
    seats = computed.standing.draws[rule_file.name]
    applied: dict[str, Any] = {}

    def plan_and_apply() -> None:
        run_id, status, written = planner.apply(planner.plan_document(), actor="demo admin")
        applied.update(run_id=run_id, status=status, enqueued=written)

    if console is not None:
        console.rule("Day 1: an admin draws the pilot (bridge plan, then bridge apply)")
    phase, _ = demo.run_phase("draw", [], work=("plan + apply", plan_and_apply))
    return {
        **phase_summary(phase),
        **applied,
        "max_people": pilot.max_people,
        "candidates": seats.candidates,
        "free_seats": seats.free_seats,
        "drawn": seats.drawn,
    }


def _brake(
    demo: Demo,
    provisioner: Provisioner,
    catalog: Catalog,
    book: RuleBook,
    console: Console | None,
) -> dict[str, Any] | None:
    """Day 2, after the PATCHes: live removals past the rule file's safety threshold were held
    by the brake (bridge/provision/brake.py); an admin reviews the held run and approves it
    (``bridge approve RUN``), and the relay delivers what it released."""
    with demo.db.read() as conn:
        held = runs.open_held(conn, TARGET)
    if held is None:
        return None
    facts = held.get("summary") or {}
    planner = Planner(demo.db, provisioner.store, catalog, book.current, now_utc)
    released: list[int] = []
    if console is not None:
        console.rule(
            f"Day 2: {facts.get('held')} removal(s) held for review ({facts.get('allowed')} "
            f"allowed at once); an admin approves run {held['id']}"
        )
    phase, _ = demo.run_phase(
        "approve",
        [],
        work=(
            "bridge approve",
            lambda: released.append(planner.approve(held["id"], actor="demo admin")),
        ),
    )
    return {
        **phase_summary(phase),
        "run": held["id"],
        "held": facts.get("held"),
        "allowed": facts.get("allowed"),
        "released": released[0] if released else 0,
    }


def _day_two(
    demo: Demo, sample: Sample, scim_ids: dict[str, str], console: Console | None
) -> dict[str, Any]:
    """Day 2: role codes added and removed, terminations — Entra-style PATCHes."""
    by_id = {r.external_id: r for r in sample.records if r.edge != "duplicate_id"}
    changes = sample.day_two
    calls = []
    for eid in changes.add_benefits:
        calls.append(_patch(scim_ids[eid], role_patch([*by_id[eid].role_codes, BENEFITS])))
    for eid in changes.remove_benefits:
        codes = [c for c in by_id[eid].role_codes if c != BENEFITS]
        calls.append(_patch(scim_ids[eid], role_patch(codes)))
    today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    for eid in changes.terminate:
        calls.append(_patch(scim_ids[eid], termination_patch(today)))
    if console is not None:
        console.rule("Day 2: role codes change and people leave")
    phase, _ = demo.run_phase("day 2", calls)
    return {
        "day2": {
            **phase_summary(phase),
            "benefits_added": len(changes.add_benefits),
            "benefits_removed": len(changes.remove_benefits),
            "terminated": len(changes.terminate),
        }
    }
