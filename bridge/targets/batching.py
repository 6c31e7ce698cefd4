"""Batches for the relay: which targets take many intents in one call, how many, and how
claimed outbox rows are grouped and cut for them (pure; ``bridge.relay`` is the shell)."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any
from typing import Protocol

from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Target

Row = dict[str, Any]

CLAIM = 64
"""Rows claimed a cycle when no target takes batches."""
BATCHED_CLAIM = 500
"""Rows claimed a cycle when a target takes batches: enough to fill a few of them."""
DEFAULT_BATCH_SIZE = 200
"""Rows a ``deliver_many`` call gets when the target names no ``batch_size``."""


class BatchTarget(Target, Protocol):
    """A target that takes many intents in one go (e.g. one Moodle call for 200 enrolments).

    ``deliver_many`` answers one Result per Delivery, in order, and never raises for LMS or
    network trouble (a raise is a bug: the relay retries every row of that call).
    """

    async def deliver_many(self, deliveries: Sequence[Delivery]) -> list[Result]: ...


def batch_size(target: Target, configured: int | None = None) -> int | None:
    """Rows per ``deliver_many`` call for ``target``, or None: it takes one intent per call.

    ``configured`` (the target's ``options.batch_size``) wins over the target's own
    ``batch_size`` attribute; 1 turns batching off.
    """
    if not callable(getattr(target, "deliver_many", None)):
        return None
    own = getattr(target, "batch_size", None)
    size = configured if configured is not None else own
    if not isinstance(size, int) or isinstance(size, bool):
        size = DEFAULT_BATCH_SIZE
    return size if size > 1 else None


def chunks(rows: Sequence[Row], size: int) -> list[list[Row]]:
    """``rows`` in claim order, in as few parts of at most ``size`` as will do, of about equal
    length (500 rows at 200 make 167 + 167 + 166, not 200 + 200 + 100)."""
    parts = -(-len(rows) // max(size, 1))
    if parts == 0:
        return []
    each, longer = divmod(len(rows), parts)
    found, start = [], 0
    for part in range(parts):
        end = start + each + (1 if part < longer else 0)
        found.append(list(rows[start:end]))
        start = end
    return found


def by_target(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Claimed rows grouped by target, each group in claim order."""
    found: dict[str, list[Row]] = {}
    for row in rows:
        found.setdefault(str(row["target"]), []).append(row)
    return found
