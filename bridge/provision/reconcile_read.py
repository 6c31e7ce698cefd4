"""Reading the LMS for a reconcile: the reader of each target kind, and one read of the named
targets (``bridge reconcile`` and the scheduled ``reconcile`` job share it).

A Moodle token whose service lacks a read function is refused before anything is read, with
every missing function named (``bridge.targets.moodle_preflight.read_refusal``).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence

from bridge.provision.drift import FieldDrift
from bridge.provision.reconcile import Reader
from bridge.provision.reconcile import Reconciled
from bridge.provision.reconcile import ReconcileError
from bridge.provision.reconcile import Reconciler
from bridge.rules.model import RuleSet
from bridge.targets import canvas_reconcile
from bridge.targets import scim_reconcile
from bridge.targets.base import Target
from bridge.targets.canvas import CanvasTarget
from bridge.targets.canvas_reconcile import CanvasReader
from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_preflight import RECONCILE
from bridge.targets.moodle_preflight import read_refusal
from bridge.targets.moodle_reconcile import MoodleReader
from bridge.targets.preflight import requirements
from bridge.targets.registry import make_target
from bridge.targets.scim import ScimTarget
from bridge.targets.scim_reconcile import ScimReader


def reader_of(target: Target) -> tuple[Reader, FieldDrift | None]:
    """The reader of a built target and how its mapped fields compare (None: Moodle's)."""
    if isinstance(target, MoodleTarget):
        return MoodleReader(target.call), None
    if isinstance(target, CanvasTarget):
        reader = CanvasReader(target.client, target.account_id, per_page=target.per_page)
        return reader, canvas_reconcile.field_drift
    if isinstance(target, ScimTarget):
        # The target's own client: its base URL and credentials (bearer or OAuth 2).
        return ScimReader(target.client), scim_reconcile.field_drift(target.extra)
    raise ReconcileError(f"reconcile cannot read target {target.name!r}")


async def read_targets(
    reconciler: Reconciler, ruleset: RuleSet, names: Sequence[str], env: Mapping[str, str]
) -> Reconciled:
    """Build the named targets (kinds checked by ``Reconciler.targets``), read, compare; the
    targets' connections closed after."""
    built: list[Target] = []
    try:
        readers: dict[str, Reader] = {}
        fields: dict[str, FieldDrift | None] = {}
        for name in names:
            target = make_target(ruleset.targets[name], env)
            built.append(target)
            if isinstance(target, MoodleTarget):
                refused = await read_refusal(target, RECONCILE, requirements(ruleset, name))
                if refused is not None:
                    raise ReconcileError(f"target {name}: {refused}")
            readers[name], fields[name] = reader_of(target)
        return await reconciler.compute(readers, fields)
    finally:
        for target in built:
            await target.aclose()
