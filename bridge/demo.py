"""``bridge demo``: the integration guide's 30-day, 200-person pilot, compressed into seconds.

A fresh SQLite database, the LMS simulator (Moodle web services) and the bridge, each served by
uvicorn on a free 127.0.0.1 port in a background thread, with the relay delivering beside them
— real HTTP on every hop, as in production. A deterministic HRIS sample of one department
(Claims) is provisioned over SCIM the way an IdP would, with the guide's edge cases (missing
emails, duplicate employee ids, non-standard role codes) and a few people of other departments;
then a day-2 change (role codes added and removed, terminations) is sent as Entra-style PATCHes.

Everything the report shows is read back — from the bridge's database (outbox, dead letters,
journal, projections, a plan over the population) and from the simulator's state — never
derived from the generated sample. ``run_demo`` returns it as a plain dict (``render`` prints
it), so tests check the numbers against the simulator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import ExitStack
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import httpx
import uvicorn
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn
from rich.progress import MofNCompleteColumn
from rich.progress import Progress
from rich.progress import TaskID
from rich.progress import TextColumn
from rich.progress import TimeElapsedColumn
from rich.table import Table

from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.planning import Planner
from bridge.provision.resources import now_utc
from bridge.relay import Relay
from bridge.rules.book import RuleBook
from bridge.rules.check import render_errors
from bridge.rules.model import RuleErrors
from bridge.schemas import Catalog
from bridge.schemas import load_catalog
from bridge.store import journal
from bridge.store import links
from bridge.store import outbox
from bridge.store import projections
from bridge.store.engine import Database

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BENEFITS = "BEN_CHOICE_2026"
MANAGER = "MANAGER"
NON_STANDARD = ("ben_choice_2026", "BEN-CHOICE-2026", "BEN_CHOICE2026", "Ben_Choice_2026")
"""What HR systems send instead of BEN_CHOICE_2026 (roleCodes compare case-exactly)."""
PILOT_DEPARTMENT = "Claims"
OTHER_DEPARTMENTS = ("Underwriting", "Finance", "IT", "Sales")
SEED = 2026
TARGET = "moodle"
CATEGORIES = {
    "data_quality": "Data quality (fix the HR record)",
    "provisioning": "Provisioning / API failure",
    "mapping": "Mapping mistake (fix the rules)",
}
_FIRST = (  # noqa: SIM905 - a compact list of sample names
    "Ava Ben Chloe Dev Elena Farid Grace Hiro Isla Jonas Kemi Liam Maya Noah Olga Priya Quinn "
    "Rosa Sam Tariq Uma Victor Wen Xavier Yara Zoe"
).split()
_LAST = (  # noqa: SIM905 - a compact list of sample names
    "Adams Baker Chen Diaz Evans Fischer Garcia Haddad Ivanova Jones Kim Lopez Murphy Nguyen "
    "Okafor Patel Quist Rossi Smith Tanaka Usman Varga Walsh Xu Young Zimmer"
).split()
_TITLES = ("Claims Specialist", "Claims Adjuster", "Senior Claims Examiner", "Claims Analyst")


class DemoError(Exception):
    """The demo cannot run (no rules or schemas found, the database exists, a server died)."""


# -- the HRIS sample (pure, deterministic) -----------------------------------------------------


@dataclass(frozen=True)
class HrRecord:
    """One HR record, as the HRIS exports it and an IdP provisions it."""

    external_id: str
    user_name: str
    given_name: str
    family_name: str
    title: str
    department: str
    role_codes: tuple[str, ...]
    work_email: str | None
    home_email: str | None
    hire_date: str
    edge: str | None = None  # missing_email | duplicate_id | non_standard_code
    duplicate_of: str | None = None  # userName of the record holding the same employee id

    @property
    def in_pilot_department(self) -> bool:
        return self.department == PILOT_DEPARTMENT

    def scim(self) -> dict[str, Any]:
        """The SCIM User an IdP POSTs for this record (core + enterprise + HR extension)."""
        emails = []
        if self.work_email:
            emails.append({"value": self.work_email, "type": "work", "primary": True})
        if self.home_email:
            emails.append({"value": self.home_email, "type": "home"})
        hr: dict[str, Any] = {"employmentStatus": "active", "hireDate": self.hire_date}
        if self.role_codes:
            hr["roleCodes"] = list(self.role_codes)
        doc: dict[str, Any] = {
            "schemas": [CORE, ENTERPRISE, HR],
            "externalId": self.external_id,
            "userName": self.user_name,
            "active": True,
            "name": {"givenName": self.given_name, "familyName": self.family_name},
            "displayName": f"{self.given_name} {self.family_name}",
            "title": self.title,
            ENTERPRISE: {"employeeNumber": self.external_id[1:], "department": self.department},
            HR: hr,
        }
        if emails:
            doc["emails"] = emails
        return doc


@dataclass(frozen=True)
class DayTwo:
    """The day-2 changes, by employee id."""

    add_benefits: tuple[str, ...]
    remove_benefits: tuple[str, ...]
    terminate: tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    records: tuple[HrRecord, ...]
    day_two: DayTwo

    @property
    def pilot(self) -> list[HrRecord]:
        return [r for r in self.records if r.in_pilot_department]

    @property
    def others(self) -> list[HrRecord]:
        return [r for r in self.records if not r.in_pilot_department]


def edge_case_counts(people: int) -> dict[str, int]:
    """How many of each edge case a sample of ``people`` Claims records holds (2 at least)."""
    return {
        "missing_email": max(2, round(people * 0.02)),
        "duplicate_id": max(2, round(people * 0.015)),
        "non_standard_code": max(2, round(people * 0.015)),
        "other_departments": max(4, people // 10),
        "add_benefits": max(2, people // 20),
        "remove_benefits": max(2, people // 20),
        "terminate": max(2, people // 40),
    }


def hr_sample(people: int = 200, seed: int = SEED) -> Sample:
    """``people`` HR records of the Claims department plus ~10% of other departments.

    ~70% hold BEN_CHOICE_2026, ~10% MANAGER; the edge cases of the guide are mixed in: no work
    email, an employee id that another record already holds (a duplicate), and a non-standard
    spelling of BEN_CHOICE_2026. The same ``people`` and ``seed`` give the same sample.
    """
    if people < 20:
        raise ValueError("the demo needs at least 20 people")
    rng = random.Random(f"bridge-demo:{seed}:{people}")  # noqa: S311 - sample data, not secrets
    counts = edge_case_counts(people)
    taken: set[str] = set()

    def name() -> tuple[str, str, str]:
        given, family = rng.choice(_FIRST), rng.choice(_LAST)
        base = f"{given}.{family}".lower()
        handle, n = base, 1
        while handle in taken:
            n += 1
            handle = f"{base}{n}"
        taken.add(handle)
        return given, family, handle

    def hire_date() -> str:
        return (
            f"{rng.randint(2012, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z"
        )

    order = rng.sample(range(people), people)
    benefits = set(rng.sample(range(people), round(people * 0.7)))
    managers = set(rng.sample(range(people), max(2, round(people * 0.1))))
    odd = [i for i in order if i in benefits][: counts["non_standard_code"]]
    rest = [i for i in order if i not in odd]
    missing = rest[: counts["missing_email"]]
    duplicates = rest[counts["missing_email"] : counts["missing_email"] + counts["duplicate_id"]]
    edges = set(odd) | set(missing) | set(duplicates)
    clean = [i for i in range(people) if i not in edges]
    holders = rng.sample(clean, len(duplicates))

    records: list[HrRecord] = []
    for i in range(people):
        given, family, handle = name()
        codes = [BENEFITS] if i in benefits else []
        if i in managers:
            codes.append(MANAGER)
        edge = None
        user_name = f"{handle}@example.com"
        work: str | None = user_name
        home = None
        if i in odd:
            codes[0] = NON_STANDARD[odd.index(i) % len(NON_STANDARD)]
            edge = "non_standard_code"
        elif i in missing:
            edge, work, user_name = "missing_email", None, handle
            home = f"{handle}@home.example" if missing.index(i) % 2 == 0 else None
        elif i in duplicates:
            edge = "duplicate_id"
        records.append(
            HrRecord(
                external_id=f"E{20000 + i}",
                user_name=user_name,
                given_name=given,
                family_name=family,
                title="Claims Manager" if i in managers else rng.choice(_TITLES),
                department=PILOT_DEPARTMENT,
                role_codes=tuple(codes),
                work_email=work,
                home_email=home,
                hire_date=hire_date(),
                edge=edge,
            )
        )
    for i, holder in zip(duplicates, holders, strict=True):  # a second record, the same id
        records[i] = dataclasses.replace(
            records[i],
            external_id=records[holder].external_id,
            duplicate_of=records[holder].user_name,
        )
    for j in range(counts["other_departments"]):
        given, family, handle = name()
        department = OTHER_DEPARTMENTS[j % len(OTHER_DEPARTMENTS)]
        records.append(
            HrRecord(
                external_id=f"E{40000 + j}",
                user_name=f"{handle}@example.com",
                given_name=given,
                family_name=family,
                title=f"{department} Associate",
                department=department,
                role_codes=(BENEFITS,) if rng.random() < 0.7 else (),
                work_email=f"{handle}@example.com",
                home_email=None,
                hire_date=hire_date(),
            )
        )

    with_benefits = [i for i in clean if i in benefits]
    without = [i for i in clean if i not in benefits]
    remove = rng.sample(with_benefits, min(counts["remove_benefits"], len(with_benefits)))
    add = rng.sample(without, min(counts["add_benefits"], len(without)))
    others = [i for i in clean if i not in remove and i not in add]
    terminate = rng.sample(others, min(counts["terminate"], len(others)))
    day_two = DayTwo(
        add_benefits=tuple(records[i].external_id for i in sorted(add)),
        remove_benefits=tuple(records[i].external_id for i in sorted(remove)),
        terminate=tuple(records[i].external_id for i in sorted(terminate)),
    )
    return Sample(tuple(records), day_two)


def role_patch(codes: Sequence[str]) -> dict[str, Any]:
    """Entra-style PATCH (capitalised op) setting a person's role codes."""
    path = f"{HR}:roleCodes"
    operation: dict[str, Any] = (
        {"op": "Replace", "path": path, "value": list(codes)}
        if codes
        else {"op": "Remove", "path": path}
    )
    return {"schemas": [PATCH_OP], "Operations": [operation]}


def termination_patch(day: str) -> dict[str, Any]:
    """Entra-style termination: capitalised ops and ``"False"`` as a string (both tolerated)."""
    return {
        "schemas": [PATCH_OP],
        "Operations": [
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Replace", "path": f"{HR}:employmentStatus", "value": "terminated"},
            {"op": "Add", "path": f"{HR}:terminationDate", "value": day},
        ],
    }


# -- servers in background threads --------------------------------------------------------------


class Served:
    """An ASGI app served by uvicorn on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, app: Any, name: str) -> None:
        self.name = name
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", ws="none"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name=name, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.socket.close()
                raise DemoError(f"the {self.name} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


class RelayThread:
    """The relay's loop in a thread of its own, as ``bridge relay`` beside ``bridge serve``."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="relay")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        self.ready.set()
        await self.relay.run(self.stop, idle=0.05)

    def __enter__(self) -> RelayThread:
        self.thread.start()
        if not self.ready.wait(timeout=10):
            raise DemoError("the relay did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=15)


# -- reading back what happened ------------------------------------------------------------------


def journal_since(db: Database, since: int) -> list[journal.Entry]:
    entries: list[journal.Entry] = []
    with db.read() as conn:
        while True:
            page = journal.read(conn, since=since, limit=1000)
            if not page:
                return entries
            entries.extend(page)
            since = int(page[-1].seq or since)


def last_seq(db: Database, since: int = 0) -> int:
    entries = journal_since(db, since)
    return int(entries[-1].seq or since) if entries else since


SETTLED = (outbox.DONE, outbox.DEAD, outbox.SKIPPED)


def outbox_counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return outbox.counts(conn)


def lms_report(state: dict[str, Any], baseline: set[int]) -> dict[str, Any]:
    """Accounts, enrolments and cohort members the bridge made in the simulated Moodle."""
    moodle = state["moodle"]
    users = [u for u in moodle["users"] if u["id"] not in baseline and not u["deleted"]]
    ours = {u["id"] for u in users}
    courses: dict[str, dict[str, int]] = {}
    for row in moodle["enrolments"]:
        if row["userid"] in ours:
            found = courses.setdefault(row["course"], {"active": 0, "suspended": 0})
            found[row["status"]] += 1
    cohort_names = {c["id"]: c["idnumber"] for c in moodle["cohorts"]}
    cohorts = Counter(
        cohort_names[m["cohortid"]] for m in moodle["cohort_members"] if m["userid"] in ours
    )
    return {
        "accounts": len(users),
        "accounts_active": sum(1 for u in users if not u["suspended"]),
        "accounts_suspended": sum(1 for u in users if u["suspended"]),
        "accounts_without_email": sum(1 for u in users if not u["email"]),
        "enrolments": dict(sorted(courses.items())),
        "cohort_members": dict(sorted(cohorts.items())),
        "web_service_calls": sum(moodle["calls"].values()),
        "calls": dict(sorted(moodle["calls"].items())),
    }


# -- the run ---------------------------------------------------------------------------------------


def _repo_dir(name: str, configured: Path | None) -> Path:
    """``rules`` / ``schemas``: as given, else BRIDGE_* / the working directory, else the repo's."""
    candidates = [configured] if configured is not None else []
    try:
        defaults = Settings.from_env()
    except ValueError as exc:
        raise DemoError(str(exc)) from exc
    candidates.append(defaults.rules_dir if name == "rules" else defaults.schemas_dir)
    candidates.append(Path(__file__).resolve().parent.parent / name)
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


@dataclass
class Phase:
    """One phase's progress: SCIM requests sent and outbox rows settled."""

    label: str
    requests: int
    started: float = field(default_factory=time.monotonic)
    answers: Counter[int] = field(default_factory=Counter)
    rows: int = 0
    settled: int = 0
    timed_out: bool = False

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 2)


class Demo:
    """The running pieces: bridge, relay, simulator, SCIM client; and the progress display."""

    def __init__(
        self,
        db: Database,
        bridge_url: str,
        token: str,
        *,
        console: Console | None,
        concurrency: int,
        timeout: float,
    ) -> None:
        self.db = db
        self.bridge_url = bridge_url
        self.token = token
        self.console = console
        self.concurrency = concurrency
        self.timeout = timeout

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"{self.bridge_url}/scim/v2",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/scim+json",
            },
            timeout=30,
            limits=httpx.Limits(max_connections=self.concurrency),
        )

    def run_phase(
        self,
        label: str,
        calls: Sequence[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]],
        waves: Sequence[int] = (),
    ) -> tuple[Phase, list[httpx.Response]]:
        """Send the SCIM calls (``waves``: indexes where a new wave starts), then wait for the
        relay to settle every outbox row they caused; a progress bar shows both."""
        return asyncio.run(self._phase(label, calls, waves))

    async def _phase(
        self,
        label: str,
        calls: Sequence[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]],
        waves: Sequence[int],
    ) -> tuple[Phase, list[httpx.Response]]:
        before = await asyncio.to_thread(outbox_counts, self.db)
        base_rows = sum(before.values())
        base_settled = sum(before.get(s, 0) for s in SETTLED)
        phase = Phase(label, len(calls))
        responses: list[httpx.Response] = []
        with ExitStack() as stack:
            progress: Progress | None = None
            scim_task = lms_task = TaskID(0)
            if self.console is not None:
                progress = stack.enter_context(
                    Progress(
                        TextColumn("{task.description:<34}"),
                        BarColumn(),
                        MofNCompleteColumn(),
                        TimeElapsedColumn(),
                        console=self.console,
                        transient=False,
                    )
                )
                scim_task = progress.add_task(f"{label}: SCIM → bridge", total=len(calls))
                lms_task = progress.add_task(f"{label}: outbox → Moodle", total=None)

            async def watch() -> None:
                while True:
                    counts = await asyncio.to_thread(outbox_counts, self.db)
                    phase.rows = sum(counts.values()) - base_rows
                    phase.settled = sum(counts.get(s, 0) for s in SETTLED) - base_settled
                    if progress is not None:
                        progress.update(lms_task, total=phase.rows, completed=phase.settled)
                    await asyncio.sleep(0.1)

            watcher = asyncio.create_task(watch())
            limit = asyncio.Semaphore(self.concurrency)
            async with self.client() as client:

                async def one(
                    call: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
                ) -> httpx.Response:
                    async with limit:
                        response = await call(client)
                    phase.answers[response.status_code] += 1
                    if progress is not None:
                        progress.advance(scim_task)
                    return response

                bounds = [0, *waves, len(calls)]
                for start, end in zip(bounds, bounds[1:], strict=False):
                    responses += await asyncio.gather(*(one(c) for c in calls[start:end]))
            deadline = time.monotonic() + self.timeout
            while True:
                backlog = await asyncio.to_thread(self._backlog)
                if backlog == 0:
                    break
                if time.monotonic() > deadline:
                    phase.timed_out = True
                    break
                await asyncio.sleep(0.05)
            watcher.cancel()
            counts = await asyncio.to_thread(outbox_counts, self.db)
            phase.rows = sum(counts.values()) - base_rows
            phase.settled = sum(counts.get(s, 0) for s in SETTLED) - base_settled
            if progress is not None:
                progress.update(lms_task, total=phase.rows, completed=phase.settled)
        return phase, responses

    def _backlog(self) -> int:
        with self.db.read() as conn:
            return outbox.backlog(conn)

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(
            f"{self.bridge_url}/scim/v2{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()


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


def _phase_summary(phase: Phase) -> dict[str, Any]:
    return {
        "requests": phase.requests,
        "answers": {str(k): v for k, v in sorted(phase.answers.items())},
        "intents": phase.rows,
        "settled": phase.settled,
        "seconds": phase.seconds,
        "timed_out": phase.timed_out,
    }


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("scimType") or body)[:200]
    return str(body)[:200]


def run_demo(
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
    directory goes. ``console``: where progress bars go (None: silent).
    """
    from bridge.cli import build_app
    from bridge.cli import build_relay
    from bridge.cli import rule_book
    from bridge.lmssim.app import SIM_CANVAS_TOKEN
    from bridge.lmssim.app import SIM_MOODLE_TOKEN
    from bridge.lmssim.app import Knobs
    from bridge.lmssim.app import create_app as create_simulator

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
                book = rule_book(settings, catalog)
            except RuleErrors as exc:
                raise DemoError(
                    f"the rules do not check clean:\n{render_errors(exc.errors)}"
                ) from exc
            ruleset = book.current()
            if ruleset is None or not any(f.target == TARGET for f in ruleset.files):
                raise DemoError(f"no rule file of {rules_source} drives the {TARGET!r} target")
            app = build_app(settings, book, relay_in_process=False)
            provisioner: Provisioner = app.state.server.provisioner
            db = provisioner.db
            relay = build_relay(db, ruleset, env, settings=settings)
            if relay is None or TARGET not in relay.targets:
                raise DemoError(f"the {TARGET!r} target cannot be built from {rules}")
            with Served(app, "bridge") as bridge, RelayThread(relay):
                summary["bridge_url"] = f"{bridge.url}/scim/v2"
                summary["lms_url"] = lms.url
                if console is not None:
                    console.print(
                        f"LMS simulator (Moodle web services) at {lms.url}; bridge at "
                        f"{bridge.url}/scim/v2 with the relay; SQLite database {db_path}"
                    )
                demo = Demo(
                    db, bridge.url, token, console=console, concurrency=concurrency, timeout=timeout
                )
                summary.update(_provision(demo, sample, console))
                day_one_seq = last_seq(db)
                summary.update(_day_two(demo, sample, summary["scim_ids"], console))
                state = httpx.get(f"{lms.url}/_sim/state").json()
            summary["lms"] = lms_report(state, baseline)
            summary.update(_bridge_report(db, provisioner, catalog, book, day_one_seq))
            pilot = next(f for f in ruleset.files if f.target == TARGET).scope.pilot
            summary["rule_file"] = next(f.name for f in ruleset.files if f.target == TARGET)
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
        console.rule("Day 1: the HRIS sample is provisioned over SCIM")
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
        "day1": {**_phase_summary(phase), "created": len(scim_ids)},
        "rejected": rejected,
        "scim_ids": scim_ids,
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
        console.rule("Day 2: role codes change, people leave (Entra-style PATCH)")
    phase, _ = demo.run_phase("day 2", calls)
    return {
        "day2": {
            **_phase_summary(phase),
            "benefits_added": len(changes.add_benefits),
            "benefits_removed": len(changes.remove_benefits),
            "terminated": len(changes.terminate),
        }
    }


def _bridge_report(
    db: Database,
    provisioner: Provisioner,
    catalog: Catalog,
    book: RuleBook,
    day_one_seq: int,
) -> dict[str, Any]:
    """What the bridge's database holds: outbox, dead letters, journal, scope, attention."""
    with db.read() as conn:
        counts = outbox.counts(conn)
        dead = outbox.dead_letters(conn, limit=100_000)
        linked = links.all_of(conn, TARGET)
        ruleset = book.current()
        files = ruleset.files if ruleset is not None else []
        in_scope = {f.name: projections.count_in_scope(conn, f.name) for f in files}
    planner = Planner(db, provisioner.store, catalog, book.current, now_utc)
    plan = planner.compute().plan
    entries = journal_since(db, day_one_seq)
    writes = [e for e in entries if not e.op.startswith("deliver.")]
    deliveries = [e for e in entries if e.op.startswith("deliver.")]
    tolerances = Counter(t for e in writes for t in e.tolerances)
    attention: dict[str, list[dict[str, Any]]] = {
        "problems": [],
        "duplicates": [],
        "unknown_role_codes": [],
    }
    key = {
        "problem": "problems",
        "duplicate": "duplicates",
        "unknown-role-code": "unknown_role_codes",
    }
    for item in plan.attention:
        attention[key.get(item.kind, "problems")].append(
            {"person": item.label, "rule_file": item.rule_file, "reason": item.reason}
        )
    return {
        "outbox": dict(sorted(counts.items())),
        "errors": {
            name: sum(1 for row in dead if row.get("category") == name) for name in CATEGORIES
        },
        "dead_letters": [
            {
                "id": row["id"],
                "category": row.get("category"),
                "intent": f"{row['intent'].get('kind')} {row['intent'].get('ref') or ''}".strip(),
                "error": str(row.get("last_error") or "")[:120],
            }
            for row in dead[:20]
        ],
        "linked_accounts": sum(1 for row in linked if row.get("lms_user_id")),
        "in_scope": in_scope,
        "population": plan.population,
        "pending_changes": len(plan.intents),
        "attention": attention,
        "people_needing_attention": plan.people_needing_attention,
        "journal": {
            "day1_last_seq": day_one_seq,
            "day2_first_seq": int(entries[0].seq or 0) if entries else None,
            "day2_last_seq": int(entries[-1].seq or 0) if entries else None,
            "day2_since": entries[0].at.isoformat() if entries else None,
            "day2_writes": len(writes),
            "day2_deliveries": len(deliveries),
            "day2_tolerances": dict(sorted(tolerances.items())),
        },
    }


# -- the report ------------------------------------------------------------------------------------


def _command_exists(name: str) -> bool:
    from bridge.cli import main as cli

    return isinstance(cli, click.Group) and name in cli.commands


def render(summary: dict[str, Any], console: Console) -> None:
    """The report ``bridge demo`` prints, from ``run_demo``'s summary."""
    lms = summary["lms"]
    console.rule("Report (read back from the bridge's database and the LMS simulator)")
    day1, day2 = summary["day1"], summary["day2"]
    overview = Table(title="Runs", title_justify="left")
    for column in ("", "SCIM calls", "answers", "LMS intents", "settled", "seconds"):
        overview.add_column(column, justify="right" if column else "left")
    for label, phase in (("day 1: hires", day1), ("day 2: changes", day2)):
        overview.add_row(
            label + (" [red](timed out)[/]" if phase["timed_out"] else ""),
            str(phase["requests"]),
            ", ".join(f"{n}×{code}" for code, n in phase["answers"].items()),
            str(phase["intents"]),
            str(phase["settled"]),
            f"{phase['seconds']:.1f}",
        )
    console.print(overview)
    console.print(
        f"HR sample: {summary['hr_records']} records: {summary['pilot_department_records']} in "
        f"{PILOT_DEPARTMENT} (the pilot), {summary['other_department_records']} in other "
        f"departments. The bridge stores {summary['population']} people; "
        + ", ".join(f"{n} in scope of {escape(name)}" for name, n in summary["in_scope"].items())
        + "."
    )

    accounts = Table(title="LMS accounts (simulated Moodle)", title_justify="left")
    for column in ("created", "active", "suspended", "linked in the bridge"):
        accounts.add_column(column, justify="right")
    accounts.add_row(
        str(lms["accounts"]),
        str(lms["accounts_active"]),
        str(lms["accounts_suspended"]),
        str(summary["linked_accounts"]),
    )
    console.print(accounts)

    courses = Table(title="Enrolments by course", title_justify="left")
    courses.add_column("course")
    courses.add_column("active", justify="right")
    courses.add_column("suspended (progress kept)", justify="right")
    for course, found in lms["enrolments"].items():
        courses.add_row(escape(course), str(found["active"]), str(found["suspended"]))
    for cohort, members in lms["cohort_members"].items():
        courses.add_row(f"cohort {escape(cohort)}", str(members), "")
    console.print(courses)

    errors = Table(title="Errors by category (dead letters)", title_justify="left")
    errors.add_column("category")
    errors.add_column("dead letters", justify="right")
    for name, title in CATEGORIES.items():
        errors.add_row(title, str(summary["errors"][name]))
    console.print(errors)
    for row in summary["dead_letters"]:
        console.print(escape(f"  #{row['id']} {row['category']}: {row['intent']}: {row['error']}"))

    attention = Table(
        title=f"People needing attention ({summary['people_needing_attention']} in the plan, "
        f"{len(summary['rejected'])} refused by SCIM)",
        title_justify="left",
    )
    attention.add_column("what", no_wrap=True)
    attention.add_column("person")
    attention.add_column("why")
    for item in summary["rejected"]:
        holder = f" is held by {item['held_by']}" if item.get("held_by") else ""
        attention.add_row(
            "duplicate id" if item["scimType"] == "uniqueness" else "refused",
            escape(item["userName"]),
            escape(
                f"POST answered {item['status']} {item['scimType'] or ''}: "
                f"externalId {item['externalId']}{holder}"
            ),
        )
    titles = {
        "problems": "missing data",
        "duplicates": "duplicate in LMS",
        "unknown_role_codes": "unknown role code",
    }
    for kind, items in summary["attention"].items():
        for item in items:
            attention.add_row(titles[kind], escape(item["person"]), escape(item["reason"]))
    console.print(attention)

    log = summary["journal"]
    console.print(
        f"Journal: day 1 is seqs 1–{log['day1_last_seq']}; day 2 is seqs "
        f"{log['day2_first_seq']}–{log['day2_last_seq']} ({log['day2_writes']} SCIM writes, "
        f"{log['day2_deliveries']} LMS deliveries), since {log['day2_since']}."
    )
    if log["day2_tolerances"]:
        used = ", ".join(f"{name} ×{n}" for name, n in log["day2_tolerances"].items())
        console.print(f"IdP quirks tolerated and journalled on day 2: {escape(used)}.")
    console.print(
        f"Drift: a plan over the whole population finds {summary['pending_changes']} "
        "change(s) left to make; outbox: "
        + ", ".join(f"{n} {status}" for status, n in summary["outbox"].items())
        + "."
    )
    since = log["day1_last_seq"]
    if summary["kept"]:
        env = f"export BRIDGE_DATABASE_URL={summary['database_url']}"
        if summary["rules_kept"]:
            env += f" BRIDGE_RULES={summary['rules_dir']}"
        env += f" BRIDGE_SCHEMAS={summary['schemas_dir']}"
        lines = [
            env,
            f"bridge journal --since {since}    # the day-2 changes, before and after",
        ]
        if summary["rules_kept"] and _command_exists("revert"):
            lines.append(
                f"bridge revert --since {log['day2_since']}    # plan their undo; --apply does it"
            )
        lines.append("bridge errors    # dead letters by category")
        console.print(f"Database: {escape(summary['database'])} (kept). Inspect it with:")
        for line in lines:
            console.print(f"  {escape(line)}", soft_wrap=True)
    else:
        console.print(
            f"Database: {escape(summary['database'])} (removed). Run `bridge demo --keep` to "
            f"inspect it afterwards with `bridge journal --since {since}` and `bridge revert`."
        )
    pilot = summary["pilot"]
    if pilot["max_people"] or pilot["ends"]:
        console.print(
            f"Pilot: {escape(summary['rule_file'])} admits at most "
            f"{pilot['max_people'] or 'any number of'} people"
            + (f", until {pilot['ends']}" if pilot["ends"] else "")
            + "."
        )
    if pilot["ended"]:
        console.print(
            f"[bold red]The pilot of {escape(summary['rule_file'])} ended on {pilot['ends']}: "
            "nobody new is admitted, so no account is created. Move `scope.pilot.ends` in the "
            "rule file.[/]"
        )
    console.print(f"Finished in {summary['seconds']:.1f} s.")


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Only warnings and errors from the bridge's loggers while the progress bars run."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


def main(*, people: int, database: Path | None, keep: bool) -> None:
    """``bridge demo``: run the pilot, print the report."""
    console = Console()
    try:
        with _quiet_logs():
            summary = run_demo(people=people, database=database, keep=keep, console=console)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc
    render(summary, console)
