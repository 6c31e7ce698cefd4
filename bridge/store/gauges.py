"""The queries a ``/metrics`` scrape and a ``/readyz`` probe run: a few grouped aggregates
whatever the population (one row per target and state, never one per person), the database
ping and the migration revision it is at.
"""

from __future__ import annotations

from datetime import datetime

from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy import func
from sqlalchemy import inspect
from sqlalchemy import select
from sqlalchemy import text

from bridge.store import health
from bridge.store.engine import MIGRATIONS
from bridge.store.outbox import OUTBOX
from bridge.store.raw import read_time
from bridge.store.runs import RUNS
from bridge.store.schedule_runs import DONE
from bridge.store.schedule_runs import SCHEDULE_RUNS

OWED = ("pending", "retry", "running", "dead", "quarantined")
"""The outbox states counted: what is still owed to the LMS. ``done`` rows are history (the
relay's counters count them) and would make the scrape grow with every delivery."""
QUARANTINED = "quarantined"
VERSION_TABLE = "alembic_version"


def outbox_depth(conn: Connection) -> dict[tuple[str, str], int]:
    """(target, state) → rows owed, in one grouped query over the ``(status, …)`` index."""
    rows = conn.execute(
        select(OUTBOX.c.target, OUTBOX.c.status, func.count())
        .where(OUTBOX.c.status.in_(OWED))
        .group_by(OUTBOX.c.target, OUTBOX.c.status)
    )
    return {(row[0], row[1]): int(row[2]) for row in rows}


def awaiting_decision(conn: Connection) -> dict[str, int]:
    """Run kind → runs quarantined until an admin decides (held live writes, plans over a
    safety threshold, refused reloads)."""
    rows = conn.execute(
        select(RUNS.c.kind, func.count()).where(RUNS.c.status == QUARANTINED).group_by(RUNS.c.kind)
    )
    return {row[0]: int(row[1]) for row in rows}


def last_reconciles(conn: Connection) -> dict[str, datetime]:
    """Rule file → when its last scheduled reconcile finished (successfully)."""
    rows = conn.execute(
        select(SCHEDULE_RUNS.c.rule_file, func.max(SCHEDULE_RUNS.c.finished))
        .where(SCHEDULE_RUNS.c.job == "reconcile", SCHEDULE_RUNS.c.state == DONE)
        .group_by(SCHEDULE_RUNS.c.rule_file)
    )
    return {row[0]: read_time(row[1]) for row in rows if row[1] is not None}


def target_states(conn: Connection) -> dict[str, str]:
    """Target → its recorded health (ok, misconfigured, unreachable)."""
    return {name: found.state for name, found in health.all_of(conn).items()}


def ping(conn: Connection) -> None:
    """One round trip: raises if the database does not answer."""
    conn.execute(text("SELECT 1")).scalar_one()


def revision(conn: Connection) -> str | None:
    """The migration revision the database is at (None: never migrated). Read from alembic's
    table directly: alembic's ``MigrationContext`` logs two INFO lines at every probe."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    found = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()  # noqa: S608 - a constant
    return found[0] if len(found) == 1 else ", ".join(sorted(found)) or None


def head_revision() -> str | None:
    """The newest migration revision this code ships (read from the migration scripts)."""
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()
