"""``bridge demo``: the integration guide's pilot end to end, below the CLI.

:mod:`~bridge.demo.sample` makes the HRIS sample (pure), :mod:`~bridge.demo.servers` serves
the LMS simulator, the bridge and the relay in threads, :mod:`~bridge.demo.phases` sends each
day's SCIM calls and waits for the relay, :mod:`~bridge.demo.run` runs the two days,
:mod:`~bridge.demo.readback` reads back what the bridge and the LMS hold, and
:mod:`~bridge.demo.report` prints it. The composition root (``bridge/cli/demo.py``) passes in
what it builds (:class:`~bridge.demo.run.Wiring`); nothing here imports the CLI.
"""

from __future__ import annotations

from bridge.demo.report import render
from bridge.demo.run import Wiring
from bridge.demo.run import run_demo
from bridge.demo.sample import BENEFITS
from bridge.demo.sample import MANAGER
from bridge.demo.sample import NON_STANDARD
from bridge.demo.sample import HrRecord
from bridge.demo.sample import Sample
from bridge.demo.sample import edge_case_counts
from bridge.demo.sample import hr_sample
from bridge.demo.servers import DemoError

__all__ = [
    "BENEFITS",
    "MANAGER",
    "NON_STANDARD",
    "DemoError",
    "HrRecord",
    "Sample",
    "Wiring",
    "edge_case_counts",
    "hr_sample",
    "render",
    "run_demo",
]
