"""Target preflight as a use case: check what the rules need of each target, record the verdict.

``run_preflight`` asks each target (``check_target`` dispatches by kind to
``bridge.targets.*_preflight``) and records the verdict in ``target_health``: ``misconfigured``
with the reason and the failing findings when a blocking finding fails (the relay then holds
the target's intents instead of burning retries into dead letters), ``ok`` when it passes. An
unreachable target's state is left alone: the relay's circuit breaker owns ``unreachable``.
One log line per verdict on ``bridge.preflight``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from datetime import datetime

from bridge.rules.model import RuleSet
from bridge.store import health
from bridge.store.engine import Database
from bridge.targets import canvas_preflight
from bridge.targets import moodle_preflight
from bridge.targets import rest_preflight
from bridge.targets import scim_preflight
from bridge.targets.base import Target
from bridge.targets.canvas import CanvasTarget
from bridge.targets.moodle import MoodleTarget
from bridge.targets.preflight import WARNING
from bridge.targets.preflight import Finding
from bridge.targets.preflight import Requirements
from bridge.targets.preflight import Verdict
from bridge.targets.preflight import requirements
from bridge.targets.rest import RestTarget
from bridge.targets.scim import ScimTarget

log = logging.getLogger("bridge.preflight")

Clock = Callable[[], datetime]


async def check_target(target: Target, needs: Requirements) -> Verdict:
    """The verdict of one target's preflight, by its kind (no database)."""
    if isinstance(target, MoodleTarget):
        return await moodle_preflight.check(target, needs)
    if isinstance(target, CanvasTarget):
        return await canvas_preflight.check(target, needs)
    if isinstance(target, ScimTarget):
        return await scim_preflight.check(target, needs)
    if isinstance(target, RestTarget):
        return rest_preflight.check(target, needs)
    unknown = Finding(
        target.name,
        "kind",
        True,
        f"no preflight for {target.kind} targets: nothing was verified",
        severity=WARNING,
        where=needs.where,
    )
    return Verdict(target.name, (unknown,))


async def _checked(target: Target, needs: Requirements) -> Verdict:
    """``check_target``, an unexpected failure of the check itself kept as a finding."""
    try:
        return await check_target(target, needs)
    except Exception as exc:  # a crashed check says nothing about the LMS's setup
        log.exception("preflight of target %s failed to run", target.name)
        failed = Finding(
            target.name,
            "preflight",
            False,
            f"the preflight could not finish: {type(exc).__name__}: {exc}",
            severity=WARNING,
            where=needs.where,
        )
        return Verdict(target.name, (failed,), unreachable=True)


def record(db: Database, verdict: Verdict, *, now: datetime) -> None:
    """Save a verdict in ``target_health`` (not an unreachable one) and log it."""
    name = verdict.target
    if verdict.unreachable:
        log.warning(
            "target %s could not be checked: %s",
            name,
            verdict.reason() or "unreachable",
            extra={"target": name, "verdict": "unreachable", "reason": verdict.reason()},
        )
        return
    unsettled = [f.as_dict() for f in verdict.findings if not f.ok]
    with db.write() as conn:
        if verdict.passed:
            health.save(conn, name, health.OK, now=now, findings=unsettled)
        else:
            health.save(
                conn,
                name,
                health.MISCONFIGURED,
                now=now,
                reason=verdict.reason(),
                findings=unsettled,
            )
    if verdict.passed:
        log.info(
            "target %s passes preflight (%d warning(s))",
            name,
            len(verdict.warnings),
            extra={"target": name, "verdict": "passed", "reason": ""},
        )
        return
    problems = "; ".join(f.line() for f in verdict.blocking)
    log.warning(
        "target %s fails preflight: its intents wait: %s",
        name,
        problems,
        extra={"target": name, "verdict": "failed", "reason": verdict.reason()},
    )


def _clock(now: datetime | Clock) -> Clock:
    return now if callable(now) else (lambda: now)


async def run_preflight(
    db: Database,
    ruleset: RuleSet,
    targets: Mapping[str, Target],
    *,
    now: datetime | Clock,
    names: Iterable[str] | None = None,
) -> dict[str, Verdict]:
    """Check each target (all of ``targets``, or ``names``) concurrently against what the
    rules need of it; record and log each verdict. KeyError for a name not in ``targets``."""
    chosen = list(targets) if names is None else list(dict.fromkeys(names))
    for name in chosen:
        if name not in targets:
            raise KeyError(name)
    verdicts = await asyncio.gather(
        *(_checked(targets[name], requirements(ruleset, name)) for name in chosen)
    )
    clock = _clock(now)
    for verdict in verdicts:
        await asyncio.to_thread(record, db, verdict, now=clock())
    return {verdict.target: verdict for verdict in verdicts}


def preflight_for(
    db: Database,
    rules: Callable[[], RuleSet | None],
    targets: Mapping[str, Target],
    *,
    now: Clock,
) -> Callable[[str], Awaitable[Verdict]]:
    """The relay's re-check of one target (``bridge.relay.Preflight``) against the rules
    loaded now (``rules``: e.g. ``RuleBook.current``)."""

    async def preflight(name: str) -> Verdict:
        ruleset = rules()
        if ruleset is None:
            return Verdict(name)
        verdicts = await run_preflight(db, ruleset, targets, now=now, names=[name])
        return verdicts[name]

    return preflight
