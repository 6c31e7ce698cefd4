"""The bridge's Prometheus metrics (prometheus-client), and the request a log line is about.

``Telemetry`` holds every metric object on one ``CollectorRegistry``, passed in or made fresh:
nothing is registered at import time, so any number of apps can live in one process (tests).
Counters and histograms are incremented where things happen (the HTTP middleware, the relay);
the state the database holds (outbox depth, runs awaiting a decision, target verdicts, last
reconciles) and the rule set's are read at scrape time through a ``State`` callable
(``Telemetry.watch``) and exported as gauges, so every replica reports the same figures.

The dashboard in ``grafana-dashboard.json`` (package data) queries these names.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import values
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

REQUEST_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONFIRM_SECONDS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
"""Write → LMS-confirmed: sub-second when the LMS answers, hours when it was down."""

OUTBOX_STATES = ("pending", "retry", "running", "dead", "quarantined")
"""The outbox states still owed to the LMS (``done``, ``skipped``, ``rejected`` are history)."""
VERDICTS = ("passed", "failed", "unreachable", "unchecked")
_VERDICT_OF_HEALTH = {"ok": "passed", "misconfigured": "failed", "unreachable": "unreachable"}
UNMATCHED = "unmatched"
"""The route label of a request no route matched (never the raw path: unbounded labels)."""


@dataclass(frozen=True)
class State:
    """What a scrape reads: the database's figures and the rule set in force."""

    outbox: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(target, state) → rows."""
    awaiting_decision: Mapping[str, int] = field(default_factory=dict)
    """run kind (held, apply, reconcile, reload, …) → runs quarantined until approved."""
    target_health: Mapping[str, str] = field(default_factory=dict)
    """target → its recorded state (ok, misconfigured, unreachable)."""
    last_reconcile: Mapping[str, datetime] = field(default_factory=dict)
    """target → when its last scheduled reconcile finished."""
    targets: tuple[str, ...] = ()
    """The targets the rule set drives (reported even without a row)."""
    rules_version: str | None = None
    reload_refused: bool = False
    """The rule files on disk were refused (failed checks or quarantined): the last good set
    stays in force."""
    reload_refusals: int = 0
    """Reloads refused since the process started."""


def verdict(health_state: str | None) -> str:
    """A target's preflight verdict from its recorded health (none recorded: ``unchecked``)."""
    if health_state is None:
        return "unchecked"
    return _VERDICT_OF_HEALTH.get(health_state, health_state)


def state_families(state: State) -> Iterator[Metric]:
    """The scrape-time gauges of one ``State`` (pure: tested without a database)."""
    targets = sorted(set(state.targets) | {t for t, _ in state.outbox})
    outbox = GaugeMetricFamily(
        "bridge_outbox_rows",
        "Outbox rows still owed to the LMS, by target and state",
        labels=["target", "state"],
    )
    for target in targets:
        for name in OUTBOX_STATES:
            outbox.add_metric([target, name], state.outbox.get((target, name), 0))
    for (target, name), count in sorted(state.outbox.items()):
        if name not in OUTBOX_STATES:
            outbox.add_metric([target, name], count)
    yield outbox
    awaiting = GaugeMetricFamily(
        "bridge_runs_awaiting_decision",
        "Runs held or quarantined until an admin approves or rejects them, by kind",
        labels=["kind"],
    )
    for kind in sorted({"held", *state.awaiting_decision}):
        awaiting.add_metric([kind], state.awaiting_decision.get(kind, 0))
    yield awaiting
    preflight = GaugeMetricFamily(
        "bridge_target_preflight",
        "Each target's last recorded verdict (1 for the verdict it has, 0 for the others)",
        labels=["target", "verdict"],
    )
    for target in sorted(set(targets) | set(state.target_health)):
        found = verdict(state.target_health.get(target))
        for name in VERDICTS:
            preflight.add_metric([target, name], 1 if name == found else 0)
    yield preflight
    reconcile = GaugeMetricFamily(
        "bridge_last_reconcile_timestamp_seconds",
        "When each target's last scheduled reconcile finished (Unix time)",
        labels=["target"],
    )
    for target, when in sorted(state.last_reconcile.items()):
        reconcile.add_metric([target], when.timestamp())
    yield reconcile
    rules = GaugeMetricFamily(
        "bridge_rules_info",
        "The rule set in force (1, labelled with its version)",
        labels=["version"],
    )
    if state.rules_version is not None:
        rules.add_metric([state.rules_version], 1)
    yield rules
    yield GaugeMetricFamily(
        "bridge_rules_reload_refused",
        "1 while the rule files on disk are refused (failed checks or quarantined); the last "
        "good set stays in force",
        value=1 if state.reload_refused else 0,
    )
    yield CounterMetricFamily(
        "bridge_rules_reload_refusals",
        "Rule reloads refused since the process started (failed checks, or quarantined over "
        "the safety threshold)",
        value=state.reload_refusals,
    )


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], State]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        yield from state_families(self.read())

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time only, never when registered


def share_between_processes() -> None:
    """Count this process's metrics in the files of ``PROMETHEUS_MULTIPROC_DIR`` (set by the
    caller) from now on, as prometheus-client's multiprocess mode does for a process started
    with it set: ``bridge serve --workers N``'s supervisor (its relay), whose workers are."""
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class Telemetry:
    """Every metric of one bridge process, on ``registry`` (a fresh one by default).

    ``shared``: the directory of prometheus-client's multiprocess mode (``--workers N``): a
    scrape then sums every process's counters and histograms from its files, so it sees the
    whole server whichever worker answers."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, shared: str | None = None
    ) -> None:
        self.shared = shared
        self.registry = registry if registry is not None else CollectorRegistry()
        on = self.registry
        self.requests = Counter(
            "bridge_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=on,
        )
        self.request_seconds = Histogram(
            "bridge_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            buckets=REQUEST_SECONDS,
            registry=on,
        )
        self.deliveries = Counter(
            "bridge_deliveries",
            "Outbox rows settled by the relay, by target, outcome (done, retry, dead, wait) "
            "and error category",
            ["target", "outcome", "category"],
            registry=on,
        )
        self.confirm_seconds = Histogram(
            "bridge_write_to_confirmed_seconds",
            "From the write that queued an LMS call to the LMS confirming it, by target",
            ["target"],
            buckets=CONFIRM_SECONDS,
            registry=on,
        )
        self.retries = Counter(
            "bridge_delivery_retries",
            "Deliveries scheduled again after a failure, by target and error category",
            ["target", "category"],
            registry=on,
        )
        self.dead_letters = Counter(
            "bridge_dead_letters",
            "Deliveries given up (dead letters), by target and error category",
            ["target", "category"],
            registry=on,
        )
        self._watching: _StateCollector | None = None

    def watch(self, read: Callable[[], State]) -> None:
        """Export the gauges of ``read()`` at every scrape (one reader; a second replaces it)."""
        if self._watching is not None:
            self.registry.unregister(self._watching)
        self._watching = _StateCollector(read)
        self.registry.register(self._watching)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the format ``accept`` asks for (OpenMetrics, or by default the
        Prometheus text format 0.0.4), and its media type. Reads the watched state: blocking."""
        encode, media_type = choose_encoder(accept or "")
        if self.shared is None:
            return encode(self.registry), media_type
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.shared)  # type: ignore[no-untyped-call]
        if self._watching is not None:
            registry.register(self._watching)
        return encode(registry), media_type


# -- the request a log line is about ---------------------------------------------------------------


@dataclass
class LogContext:
    """Set by the HTTP shell for one request; the log filter adds it to every line logged while
    the request runs (on worker threads too: they copy the context)."""

    request_id: str
    journal_seq: int | None = None


current_request: contextvars.ContextVar[LogContext | None] = contextvars.ContextVar(
    "bridge_request", default=None
)
