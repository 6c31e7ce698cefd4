"""Getting people past the shipped rules' capped pilot in tests about something else.

A capped pilot is drawn by ``bridge plan`` + ``bridge apply``, never filled by SCIM writes
(bridge/rules/pilot.py): a test whose people are created over SCIM and must reach the LMS
either runs that draw, as an admin would on day 0 (:func:`draw`), or uses the shipped rules
with the cap taken off (:func:`uncapped`), where each write admits its person at once.
"""

from __future__ import annotations

from pathlib import Path

from bridge.provision import Provisioner
from bridge.provision.planning import Planner

CAP = "    max_people: 200\n"


def uncapped(rules_dir: Path) -> Path:
    """``rules_dir`` with the shipped benefits pilot's cap removed (its end date stays)."""
    path = rules_dir / "benefits-2026.yaml"
    text = path.read_text()
    assert CAP in text, "the shipped pilot is no longer capped at 200: update tests/pilots.py"
    path.write_text(text.replace(CAP, ""))
    return rules_dir


def planner_of(provisioner: Provisioner) -> Planner:
    """The planner over the provisioner's database, rules and clock."""
    return Planner(
        provisioner.db,
        provisioner.store,
        provisioner.catalog,
        provisioner.projector.rules,
        provisioner.clock,
    )


def draw(provisioner: Provisioner, *, actor: str = "admin") -> int:
    """The day-0 draw: plan over the stored population and apply it; the intents enqueued."""
    planner = planner_of(provisioner)
    run_id, status, written = planner.apply(planner.plan_document(), actor=actor)
    assert status == "applied", (run_id, status)
    return written
