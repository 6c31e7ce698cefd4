"""``bridge demo``'s phases: SCIM calls sent to the bridge — or an admin's step such as
``bridge plan`` + ``bridge apply`` — then the relay finishing every outbox row they caused
(delivered, or given up as a dead letter), with a progress bar for each (:class:`Demo`,
:class:`Phase`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn
from rich.progress import MofNCompleteColumn
from rich.progress import Progress
from rich.progress import TaskID
from rich.progress import TextColumn
from rich.progress import TimeElapsedColumn

from bridge.demo.readback import FAILED
from bridge.demo.readback import outbox_counts
from bridge.store import outbox
from bridge.store.engine import Database


@dataclass
class Phase:
    """One phase's progress: SCIM requests sent, and the LMS changes they caused (outbox rows)
    delivered or failed (a dead letter, or skipped by an admin)."""

    label: str
    requests: int
    started: float = field(default_factory=time.monotonic)
    answers: Counter[int] = field(default_factory=Counter)
    rows: int = 0
    delivered: int = 0
    failed: int = 0
    timed_out: bool = False

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 2)

    @property
    def finished(self) -> int:
        return self.delivered + self.failed

    def count(self, counts: Mapping[str, int], base: Mapping[str, int]) -> None:
        """Take the outbox's counts by status, less those before the phase (``base``)."""
        self.rows = sum(counts.values()) - sum(base.values())
        self.delivered = counts.get(outbox.DONE, 0) - base.get(outbox.DONE, 0)
        self.failed = sum(counts.get(s, 0) - base.get(s, 0) for s in FAILED)


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
        *,
        work: tuple[str, Callable[[], object]] | None = None,
    ) -> tuple[Phase, list[httpx.Response]]:
        """Send the SCIM calls (``waves``: indexes where a new wave starts) — or do ``work``
        (what it is, and a blocking step such as plan + apply) — then wait for the relay to
        settle every outbox row they caused; a progress bar shows both."""
        return asyncio.run(self._phase(label, calls, waves, work))

    async def _phase(
        self,
        label: str,
        calls: Sequence[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]],
        waves: Sequence[int],
        work: tuple[str, Callable[[], object]] | None = None,
    ) -> tuple[Phase, list[httpx.Response]]:
        before = await asyncio.to_thread(outbox_counts, self.db)
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
                scim_task = progress.add_task(
                    f"{label}: {work[0] if work else 'HR records → bridge'}",
                    total=1 if work else len(calls),
                )
                lms_task = progress.add_task(f"{label}: changes → Moodle", total=None)

            async def watch() -> None:
                while True:
                    phase.count(await asyncio.to_thread(outbox_counts, self.db), before)
                    if progress is not None:
                        progress.update(lms_task, total=phase.rows, completed=phase.finished)
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
                if work is not None:
                    await asyncio.to_thread(work[1])
                    if progress is not None:
                        progress.advance(scim_task)
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
            phase.count(await asyncio.to_thread(outbox_counts, self.db), before)
            if progress is not None:
                progress.update(lms_task, total=phase.rows, completed=phase.finished)
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


def phase_summary(phase: Phase) -> dict[str, Any]:
    """A phase as plain data: SCIM requests and their answers by HTTP status; ``lms_changes``
    (outbox rows caused), ``delivered`` and ``failed`` of them; seconds; whether it timed out."""
    return {
        "requests": phase.requests,
        "answers": {str(k): v for k, v in sorted(phase.answers.items())},
        "lms_changes": phase.rows,
        "delivered": phase.delivered,
        "failed": phase.failed,
        "seconds": phase.seconds,
        "timed_out": phase.timed_out,
    }
