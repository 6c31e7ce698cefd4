"""The ``bridge`` command: the composition root, the only place that reads configuration."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette

from bridge.auth.tokens import generate
from bridge.auth.tokens import parse_scopes
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.planning import PlanError
from bridge.provision.planning import Planner
from bridge.provision.resources import now_utc
from bridge.provision.revert import Reverter
from bridge.provision.revert import RevertError
from bridge.relay import Relay
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.rules.check import errors_as_json
from bridge.rules.check import load_lms_catalogue
from bridge.rules.check import render_errors
from bridge.rules.explain import explanation_to_json
from bridge.rules.explain import render_explanation
from bridge.rules.fixtures import fixture_files
from bridge.rules.fixtures import render_report
from bridge.rules.fixtures import run_fixtures
from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleSet
from bridge.rules.plan import plan_to_json
from bridge.rules.plan import render_text
from bridge.schemas import Catalog
from bridge.schemas import SchemaError
from bridge.schemas import load_catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import journal
from bridge.store import outbox
from bridge.store import tokens
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.targets.base import TargetConfigError
from bridge.targets.registry import make_target

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields (request_id, status, ms) included."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(settings: Settings) -> None:
    # Every request logs a line; neither format shows the caller's file and line, the thread
    # or the process, so the records skip finding them (the "Optimization" section of the
    # logging HOWTO): a third of what a log line costs.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def open_database(settings: Settings) -> Database:
    db = connect(settings.database_url)
    db.upgrade()
    return db


@contextmanager
def database(settings: Settings) -> Iterator[Database]:
    """A migrated database for one command, closed when the command ends."""
    db = open_database(settings)
    try:
        yield db
    finally:
        db.dispose()


def check_rules(
    directory: Path, catalog: Catalog, lms: Any = None
) -> tuple[RuleSet | None, list[RuleError]]:
    """``check_directory`` plus the checks only the target adapters know (rest, scim options)."""
    ruleset, errors = check_directory(directory, catalog, lms)
    if ruleset is not None:
        from bridge.targets import rest
        from bridge.targets import scim

        for target in ruleset.targets.values():
            problems: list[str] = []
            if target.kind == "rest":
                problems = rest.validate_options(target.options, target.credentials)
            elif target.kind == "scim":
                problems = scim.validate_options(target.options)
            errors += [
                RuleError(
                    target.mark, f"target {target.name!r}: {problem}", hint="see rules/examples/"
                )
                for problem in problems
            ]
    return (ruleset if not errors else None), errors


def rule_book(settings: Settings, catalog: Catalog) -> RuleBook:
    """The rules of ``BRIDGE_RULES``, checked against the schemas; RuleErrors if broken."""
    book = RuleBook(settings.rules_dir, lambda directory: check_rules(directory, catalog))
    if settings.rules_dir.is_dir():
        book.load()
    else:
        logging.getLogger("bridge.rules").warning(
            "no rules directory at %s: SCIM only, nothing is projected to an LMS",
            settings.rules_dir,
        )
    return book


def build_relay(
    db: Database,
    ruleset: RuleSet | None,
    env: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> Relay | None:
    """A relay for every target whose credentials are set; targets without are left waiting."""
    if ruleset is None or not ruleset.targets:
        return None
    env = os.environ if env is None else env
    targets = {}
    for name, config in ruleset.targets.items():
        try:
            targets[name] = make_target(config, env)
        except TargetConfigError as exc:
            logging.getLogger("bridge.relay").error("%s: its intents wait in the outbox", exc)
    if not targets:
        return None
    settings = settings or Settings()
    return Relay(
        db,
        targets,
        clock=now_utc,
        lease_seconds=settings.relay_lease_seconds,
        per_target=settings.relay_per_target,
    )


def build_app(
    settings: Settings, book: RuleBook | None = None, *, relay_in_process: bool = True
) -> Starlette:
    """Everything ``bridge serve`` runs: database (migrated), schemas, rules, auth, the app."""
    db = open_database(settings)
    catalog = load_catalog(settings.schemas_dir)
    book = book or rule_book(settings, catalog)
    provisioner = Provisioner(db, catalog, rules=book.current)
    background = []
    if relay_in_process:
        relay = build_relay(db, book.current(), settings=settings)
        if relay is not None:
            background.append(relay.run)
    jwt_verifier = None
    if settings.jwt.enabled:
        from bridge.auth.jwt import JwtVerifier

        jwt_verifier = JwtVerifier(settings.jwt)
    authenticate = Authenticator(db, env_token=settings.scim_token, jwt=jwt_verifier)
    return create_app(provisioner, catalog, settings, authenticate, background)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group()
def main() -> None:
    """A declarative SCIM 2.0 provisioning bridge from identity providers and HRIS to an LMS."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="SCIM server processes (one per core); the relay still runs once.",
)
@click.option(
    "--no-relay",
    is_flag=True,
    help="Do not deliver to the LMS from this process (run `bridge relay`).",
)
def serve(host: str, port: int, workers: int, no_relay: bool) -> None:
    """Run the SCIM server at http://HOST:PORT/scim/v2, and the relay to the LMS.

    With ``--workers N`` the SCIM server runs in N processes sharing the database; the
    relay runs once, in the supervising process, so a target's rate limit holds as set.
    """
    import uvicorn

    settings = _settings()
    configure_logging(settings)
    try:
        catalog = load_catalog(settings.schemas_dir)
        book = rule_book(settings, catalog)
        app = build_app(settings, book, relay_in_process=not no_relay and workers == 1)
    except RuleErrors as exc:
        raise click.ClickException(
            f"the rules do not check clean:\n{render_errors(exc.errors)}"
        ) from exc
    except (SchemaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    stop = threading.Event()
    book.watch(settings.rules_reload_seconds, stop)
    if not settings.scim_token:
        logging.getLogger("bridge").info(
            "no BRIDGE_SCIM_TOKEN set: create a token with `bridge tokens create NAME`"
        )
    try:
        if workers == 1:
            uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
            return
        relay = None if no_relay else _relay_thread(app, book, settings, stop)
        uvicorn.run(
            "bridge.cli:worker_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
        )
    finally:
        stop.set()
    if relay is not None:
        relay.join(timeout=settings.relay_lease_seconds)


def _relay_thread(
    app: Starlette, book: RuleBook, settings: Settings, stop: threading.Event
) -> threading.Thread | None:
    """The relay of a multi-process ``serve``, on an event loop of its own in the supervisor."""
    import asyncio

    relay = build_relay(app.state.server.provisioner.db, book.current(), settings=settings)
    if relay is None:
        return None

    async def run() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=lambda: (stop.wait(), loop.call_soon_threadsafe(done.set)), daemon=True
        ).start()
        await relay.run(done)

    thread = threading.Thread(target=asyncio.run, args=(run(),), name="relay", daemon=True)
    thread.start()
    return thread


def worker_app() -> Starlette:
    """One process of ``bridge serve --workers N``: the SCIM server without the relay."""
    settings = _settings()
    configure_logging(settings)
    catalog = load_catalog(settings.schemas_dir)
    book = rule_book(settings, catalog)
    book.watch(settings.rules_reload_seconds, threading.Event())
    return build_app(settings, book, relay_in_process=False)


@main.group(name="tokens")
def tokens_group() -> None:
    """Bearer tokens for SCIM clients (stored as hashes only)."""


@tokens_group.command(name="create")
@click.argument("name")
@click.option(
    "--scope", "scopes", default="read,write", show_default=True, help="read, write or both"
)
def tokens_create(name: str, scopes: str) -> None:
    """Create a token; it is printed once and never stored in clear."""
    try:
        parsed = parse_scopes(scopes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from exc
    token = generate()
    try:
        with database(_settings()) as db, db.write() as conn:
            tokens.create(conn, name, token, parsed, datetime.now(UTC))
    except tokens.TokenExists:
        raise click.ClickException(
            f"a token named {name!r} exists; revoke it or pick another name"
        ) from None
    click.echo(token)
    click.echo(
        f"# token {name!r} with scopes {' '.join(sorted(parsed))}; it is not shown again", err=True
    )


@tokens_group.command(name="list")
def tokens_list() -> None:
    """List tokens (names, scopes, dates — never the tokens)."""
    with database(_settings()) as db, db.read() as conn:
        found = tokens.listing(conn)
    table = Table("name", "scopes", "created", "revoked")
    for info in found:
        table.add_row(
            info.name,
            info.scopes,
            info.created.isoformat(),
            info.revoked.isoformat() if info.revoked else "",
        )
    Console().print(table)


@tokens_group.command(name="revoke")
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Revoke a token at once."""
    with database(_settings()) as db, db.write() as conn:
        revoked = tokens.revoke(conn, name, datetime.now(UTC))
    if not revoked:
        raise click.ClickException(f"no active token named {name!r}")
    click.echo(f"revoked {name}")


@main.group(name="db")
def db_group() -> None:
    """Database maintenance."""


@db_group.command(name="upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the newest revision."""
    settings = _settings()
    with database(settings):
        pass
    click.echo(f"database at {settings.database_url.split('@')[-1]} is up to date")


@db_group.command(name="reindex")
def db_reindex() -> None:
    """Rebuild the index that filters on multi-valued attributes use (run after a schema edit)."""
    settings = _settings()
    catalog = load_catalog(settings.schemas_dir)
    with database(settings) as db:
        store = Provisioner(db, catalog).store
        resources = rows = 0
        for resource_type in ("User", "Group"):
            with db.read() as reader:
                for batch in store.scan(reader, resource_type):
                    with db.write() as writer:
                        rows += store.reindex(writer, batch)
                    resources += len(batch)
    click.echo(f"reindexed {resources} resource(s): {rows} index row(s)")


@main.command(name="journal")
@click.option("--since", default=0, type=int, help="Only entries after this seq.")
@click.option("--resource", "resource_id", default=None, help="Only entries of this resource id.")
@click.option("--limit", default=1000, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def journal_command(since: int, resource_id: str | None, limit: int, as_json: bool) -> None:
    """Read the change journal (the delta feed)."""
    with database(_settings()) as db, db.read() as conn:
        entries = journal.read(conn, since=since, resource_id=resource_id, limit=limit)
    if as_json:
        for entry in entries:
            body = asdict(entry)
            body["at"] = entry.at.isoformat()
            click.echo(json.dumps(body, default=str))
        return
    table = Table("seq", "at", "actor", "op", "resource", "tolerances")
    for entry in entries:
        table.add_row(
            str(entry.seq),
            entry.at.strftime("%Y-%m-%d %H:%M:%S"),
            entry.actor,
            entry.op,
            f"{entry.resource_type}/{entry.resource_id}",
            ", ".join(entry.tolerances),
        )
    Console().print(table)


@main.group(name="rules")
def rules_group() -> None:
    """Check and test the YAML rule files."""


@rules_group.command(name="check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--catalogue",
    type=click.Path(exists=True, path_type=Path),
    help="LMS courses/cohorts/paths (YAML or JSON) to check refs against.",
)
@click.option("--json", "as_json", is_flag=True, help="Problems as a JSON list.")
def rules_check(path: Path | None, catalogue: Path | None, as_json: bool) -> None:
    """Report every problem of the rule files at once (file:line:col, text, hint); exit 1 on any."""
    settings = _settings()
    catalog = load_catalog(settings.schemas_dir)
    try:
        lms = load_lms_catalogue(catalogue) if catalogue else None
    except RuleErrors as exc:
        raise click.ClickException(render_errors(exc.errors)) from exc
    ruleset, errors = check_rules(path or settings.rules_dir, catalog, lms)
    if as_json:
        click.echo(json.dumps(errors_as_json(errors), indent=2))
    elif errors:
        click.echo(render_errors(errors))
    else:
        files = len(ruleset.files) if ruleset else 0
        click.echo(f"ok: {files} rule file(s), version {ruleset.version if ruleset else '-'}")
    sys.exit(1 if errors else 0)


@rules_group.command(name="test")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("-v", "--verbose", is_flag=True, help="Show the intents of passing tests too.")
@click.option(
    "--coverage-threshold", type=float, default=None, help="Fail below this % of rules exercised."
)
def rules_test(path: Path | None, verbose: bool, coverage_threshold: float | None) -> None:
    """Run the rules' fixture files (*.test.yaml): PASS/FAIL per test, and rule coverage."""
    settings = _settings()
    catalog = load_catalog(settings.schemas_dir)
    directory = path or settings.rules_dir
    ruleset, errors = check_rules(directory, catalog)
    if errors or ruleset is None:
        click.echo(render_errors(errors))
        sys.exit(1)
    try:
        report = run_fixtures(ruleset, catalog, fixture_files(directory))
    except RuleErrors as exc:
        click.echo(render_errors(exc.errors))
        sys.exit(1)
    click.echo(render_report(report, verbose))
    sys.exit(0 if report.ok(coverage_threshold) else 1)


@contextmanager
def planner(settings: Settings, rules_dir: Path | None = None) -> Iterator[Planner]:
    catalog = load_catalog(settings.schemas_dir)
    book = RuleBook(rules_dir or settings.rules_dir, lambda d: check_rules(d, catalog))
    try:
        book.load()
    except RuleErrors as exc:
        click.echo(render_errors(exc.errors), err=True)
        sys.exit(1)
    with database(settings) as db:
        provisioner = Provisioner(db, catalog, rules=book.current)
        yield Planner(db, provisioner.store, catalog, book.current, now_utc)


@main.command(name="plan")
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path),
    help="Rules directory (default BRIDGE_RULES).",
)
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON (format bridge-plan/1).")
@click.option("--only", default=None, help="Comma-separated rule ids or rule-file names.")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Save the plan (JSON) for `bridge apply`."
)
def plan_command(rules_dir: Path | None, as_json: bool, only: str | None, out: Path | None) -> None:
    """Desired vs last projected state over every stored person. Exit 0 none, 2 changes, 1 error."""
    selected = {item.strip() for item in only.split(",") if item.strip()} if only else None
    with planner(_settings(), rules_dir) as plans:
        try:
            computed = plans.compute(only=selected)
        except PlanError as exc:
            raise click.ClickException(str(exc)) from exc
        document = plan_to_json(computed.plan)
        document["fingerprint"] = computed.fingerprint
    if out is not None:
        out.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
    else:
        click.echo(render_text(computed.plan, color=sys.stdout.isatty()))
        if out is not None:
            click.echo(f"saved to {out}; apply it with: bridge apply {out}")
    sys.exit(computed.plan.exit_code)


@main.command(name="apply")
@click.argument("planfile", type=click.Path(exists=True, path_type=Path))
def apply_command(planfile: Path) -> None:
    """Enqueue a saved plan in one transaction (quarantined when over the safety threshold)."""
    try:
        document = json.loads(planfile.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{planfile}: not a plan file: {exc}") from exc
    with planner(_settings()) as plans:
        try:
            run_id, status, written = plans.apply(document, actor=_actor())
        except PlanError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"run {run_id}: {written} intent(s) {status}")
    if status == "quarantined":
        click.echo(f"over the safety threshold: review, then `bridge approve {run_id}`")


@main.command(name="approve")
@click.argument("run_id")
def approve_command(run_id: str) -> None:
    """Release a quarantined run to the LMS."""
    with planner(_settings()) as plans:
        try:
            released = plans.approve(run_id, actor=_actor())
        except PlanError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"run {run_id} approved: {released} intent(s) released")


@main.command(name="explain")
@click.argument("person")
@click.option("--json", "as_json", is_flag=True)
def explain_command(person: str, as_json: bool) -> None:
    """Why PERSON (id, externalId or userName) gets what they get in the LMS."""
    with planner(_settings()) as plans:
        try:
            explanation = plans.explain(person)
        except PlanError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(explanation_to_json(explanation), indent=2, default=str))
    else:
        click.echo(render_explanation(explanation))


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


@main.command(name="relay")
@click.option("--once", is_flag=True, help="Deliver what is due, then stop.")
def relay_command(once: bool) -> None:
    """Deliver outbox rows to the LMS targets (any number of these share a PostgreSQL outbox)."""
    import asyncio
    import signal

    settings = _settings()
    configure_logging(settings)
    catalog = load_catalog(settings.schemas_dir)
    try:
        book = rule_book(settings, catalog)
    except RuleErrors as exc:
        raise click.ClickException(render_errors(exc.errors)) from exc
    with database(settings) as db:
        relay = build_relay(db, book.current(), settings=settings)
        if relay is None:
            raise click.ClickException(
                "no target can be built: check rules/targets.yaml and the credentials' variables"
            )

        async def run() -> None:
            if once:
                while await relay.run_once():
                    pass
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await relay.run(stop)

        asyncio.run(run())


@main.group(name="errors", invoke_without_command=True)
@click.pass_context
def errors_group(context: click.Context) -> None:
    """Dead letters: intents the LMS refused, by the guide's three error categories."""
    if context.invoked_subcommand is None:
        context.invoke(errors_list)


@errors_group.command(name="list")
@click.option("--category", type=click.Choice(["data_quality", "provisioning", "mapping"]))
@click.option("--target", default=None)
@click.option("--json", "as_json", is_flag=True)
def errors_list(category: str | None, target: str | None, as_json: bool) -> None:
    """Dead letters grouped by category, with the LMS's own message."""
    with database(_settings()) as db, db.read() as conn:
        rows = outbox.dead_letters(conn, category=category, target=target)
    if as_json:
        for row in rows:
            click.echo(
                json.dumps(
                    {
                        k: row[k]
                        for k in ("id", "target", "category", "last_error", "attempts", "intent")
                    },
                    default=str,
                )
            )
        return
    if not rows:
        click.echo("no dead letters")
        return
    for name, title in CATEGORY_TITLES.items():
        group = [row for row in rows if row.get("category") == name]
        if not group:
            continue
        table = Table(
            "id",
            "target",
            "person",
            "intent",
            "attempts",
            "LMS said",
            title=f"{title} ({len(group)})",
        )
        for row in group:
            intent = row["intent"]
            table.add_row(
                str(row["id"]),
                row["target"],
                str(intent.get("person", ""))[:12],
                f"{intent.get('kind')} {intent.get('ref') or ''}".strip(),
                str(row["attempts"]),
                str(row.get("last_error") or "")[:80],
            )
        Console().print(table)
    click.echo("retry with `bridge errors retry ID…` once fixed, or `bridge errors skip ID…`")


@errors_group.command(name="show")
@click.argument("row_id", type=int)
def errors_show(row_id: int) -> None:
    """One dead letter: the intent, the LMS's message, and its delivery journal."""
    with database(_settings()) as db, db.read() as conn:
        row = outbox.get(conn, row_id)
        if row is None:
            raise click.ClickException(f"no outbox row {row_id}")
        entries = [
            e
            for e in journal.read(conn, resource_id=row["intent"].get("person"))
            if (e.detail or {}).get("outbox") == row_id
        ]
    click.echo(
        json.dumps(
            {
                k: row[k]
                for k in ("id", "target", "status", "category", "attempts", "last_error", "intent")
            },
            indent=2,
            default=str,
        )
    )
    for entry in entries:
        lms = (entry.detail or {}).get("lms", {})
        click.echo(
            f"  seq {entry.seq} {entry.at:%Y-%m-%d %H:%M:%S} {entry.op}: {lms.get('message', '')}"
        )


def _ids(ids: tuple[int, ...], everything: bool, conn: Any, category: str | None) -> list[int]:
    if everything:
        return [row["id"] for row in outbox.dead_letters(conn, category=category, limit=100_000)]
    return list(ids)


@errors_group.command(name="retry")
@click.argument("ids", type=int, nargs=-1)
@click.option("--all", "everything", is_flag=True)
@click.option("--category", type=click.Choice(["data_quality", "provisioning", "mapping"]))
def errors_retry(ids: tuple[int, ...], everything: bool, category: str | None) -> None:
    """Send dead letters again (after fixing the data, the rules or the LMS)."""
    with database(_settings()) as db, db.write() as conn:
        count = outbox.requeue(conn, _ids(ids, everything, conn, category), now_utc())
    click.echo(f"{count} intent(s) queued again")


@errors_group.command(name="skip")
@click.argument("ids", type=int, nargs=-1)
@click.option("--all", "everything", is_flag=True)
@click.option("--category", type=click.Choice(["data_quality", "provisioning", "mapping"]))
def errors_skip(ids: tuple[int, ...], everything: bool, category: str | None) -> None:
    """Give up on dead letters; the person's later intents may then go."""
    with database(_settings()) as db, db.write() as conn:
        count = outbox.skip(conn, _ids(ids, everything, conn, category))
    click.echo(f"{count} intent(s) skipped")


CATEGORY_TITLES = {
    "data_quality": "Data quality — fix the HR record",
    "provisioning": "Provisioning / API failure — check the LMS and credentials",
    "mapping": "Mapping mistake — fix the rules or the LMS catalogue",
}


@main.command(name="lmssim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
@click.option("--latency-ms", default=0.0, show_default=True)
@click.option(
    "--rate-limit", default=None, type=float, help="Requests per second (429 / Canvas 403 above)."
)
@click.option(
    "--error-rate", default=0.0, show_default=True, help="Share of calls failing with a 5xx."
)
def lmssim_command(
    host: str, port: int, latency_ms: float, rate_limit: float | None, error_rate: float
) -> None:
    """Run the LMS simulator (Moodle web services + Canvas REST) for demos and tests."""
    import uvicorn

    from bridge.lmssim.app import Knobs
    from bridge.lmssim.app import create_app as create_simulator

    knobs = Knobs(latency_ms=latency_ms, rate_limit_per_s=rate_limit, error_rate=error_rate)
    uvicorn.run(create_simulator(knobs), host=host, port=port, log_level="warning")


@main.command(name="revert")
@click.argument("seq", type=int, required=False)
@click.option("--run", "run_id", default=None, help="Undo an applied plan (its inverse intents).")
@click.option(
    "--since",
    default=None,
    help="Undo every change since this ISO time (e.g. 2026-11-28T09:00:00+00:00).",
)
@click.option("--person", default=None, help="Only this person (id, externalId or userName).")
@click.option(
    "--apply", "do_apply", is_flag=True, help="Apply the plan (otherwise it is only shown)."
)
def revert_command(
    seq: int | None, run_id: str | None, since: str | None, person: str | None, do_apply: bool
) -> None:
    """Plan the inverse of a change, a run or everything since a time; --apply to carry it out.

    Exit 0 nothing to revert, 2 changes (shown, or applied), 1 conflicts or errors.
    """
    settings = _settings()
    when = None
    if since is not None:
        try:
            when = datetime.fromisoformat(since)
        except ValueError as exc:
            raise click.BadParameter(f"not an ISO time: {since}", param_hint="--since") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    catalog = load_catalog(settings.schemas_dir)
    book = rule_book(settings, catalog)
    with database(settings) as db:
        reverter = Reverter(Provisioner(db, catalog, rules=book.current))
        try:
            plan = reverter.plan(seq=seq, run=run_id, since=when, person=person)
        except RevertError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(plan.render())
        if do_apply and plan.steps and not plan.conflicts:
            written = reverter.apply(plan, actor=_actor())
            click.echo(
                f"applied: journal seqs {', '.join(map(str, written)) or '-'}; the relay carries it to the LMS"
            )
    sys.exit(plan.exit_code)


@main.command(name="demo")
@click.option(
    "--people",
    default=200,
    show_default=True,
    type=click.IntRange(20, 2000),
    help="HR records in the pilot department (Claims); ~10% more in other departments.",
)
@click.option(
    "--database",
    "database_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite file to create and keep (it must not exist). Default: a temporary file.",
)
@click.option(
    "--keep", is_flag=True, help="Keep the temporary database and rules to inspect afterwards."
)
def demo_command(people: int, database_path: Path | None, keep: bool) -> None:
    """The guide's 30-day, 200-person pilot, compressed: LMS simulator, SCIM, relay, a report."""
    from bridge.demo import main as run

    run(people=people, database=database_path, keep=keep)
