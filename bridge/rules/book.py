"""The rule set a running bridge uses, reloaded atomically: a set that fails its checks is
never half-applied — the last good one stays, and the refusal is logged with every problem.
Warnings a check returns (``RuleError.is_warning``) are logged and do not refuse a set.

A set that checks clean still passes a *gate* before it is taken (the reload guard of
``bridge.provision.reload_guard``: removals over the safety threshold). A set the gate refuses
is quarantined: the last good one stays, and the gate is asked again at every poll while the
files stay as they are (an approval is noticed), the refusal logged once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleSet

log = logging.getLogger("bridge.rules")

Check = Callable[[Path], tuple[RuleSet | None, list[RuleError]]]
Gate = Callable[[RuleSet | None, RuleSet], str | None]
"""(the rules in force, a new set that checks clean) → None to take it, or why it is refused."""


def _split(errors: list[RuleError]) -> tuple[list[RuleError], list[RuleError]]:
    return [e for e in errors if not e.is_warning], [e for e in errors if e.is_warning]


def _warn(ruleset: RuleSet, warnings: list[RuleError]) -> None:
    if warnings:
        log.warning(
            "rules version %s: %d warning(s):\n%s",
            ruleset.version,
            len(warnings),
            "\n".join(str(w) for w in warnings),
        )


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    if not directory.is_dir():
        return ()
    return tuple(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(directory.glob("*.yaml"))
    )


class RuleBook:
    """Holds the current RuleSet; ``reload`` swaps it only when the new one checks clean and
    the gate (if any) takes it."""

    def __init__(self, directory: Path, check: Check, gate: Gate | None = None) -> None:
        self.directory = directory
        self.check = check
        self.gate = gate
        self._current: RuleSet | None = None
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self.last_refusal: list[RuleError] = []
        self.quarantined: RuleSet | None = None
        """The set on disk the gate refused (None: none held back)."""
        self.quarantine_reason: str | None = None
        self.listeners: list[Callable[[RuleSet], None]] = []  # told of each new rule set
        self.refusals = 0
        """Reloads refused since start: a set failing its checks, or a new quarantine
        verdict of the gate (``/metrics``)."""
        self._lock = threading.Lock()

    def current(self) -> RuleSet | None:
        return self._current

    def load(self) -> RuleSet:
        """The first load: problems raise (a bridge does not start on broken rules)."""
        ruleset, found = self.check(self.directory)
        errors, warnings = _split(found)
        if errors or ruleset is None:
            raise RuleErrors(errors)
        _warn(ruleset, warnings)
        self._current, self._seen = ruleset, _fingerprint(self.directory)
        return ruleset

    def reload(self) -> bool:
        """Re-read the rules if the files changed (or ask the gate again about a quarantined
        set whose files did not); True when a new set was taken."""
        with self._lock:
            seen = _fingerprint(self.directory)
            if seen == self._seen:
                if self.quarantined is None:
                    return False
                ruleset = self.quarantined
            else:
                self._seen, self.quarantined, self.quarantine_reason = seen, None, None
                candidate, found = self.check(self.directory)
                errors, warnings = _split(found)
                if errors or candidate is None:
                    self.last_refusal = errors
                    self.refusals += 1
                    log.error(
                        "refused the new rules; keeping version %s:\n%s",
                        self._version(),
                        "\n".join(str(e) for e in errors),
                    )
                    return False
                _warn(candidate, warnings)
                ruleset = candidate
            if not self._passes_gate(ruleset):
                return False
            previous = self._version()
            self._current, self.last_refusal = ruleset, []
            self.quarantined, self.quarantine_reason = None, None
            log.info("rules reloaded: version %s (was %s)", ruleset.version, previous)
        for listener in self.listeners:
            listener(ruleset)
        return True

    def _version(self) -> str:
        return self._current.version if self._current else "none"

    def _passes_gate(self, ruleset: RuleSet) -> bool:
        """Whether the gate takes the set; a refusal is logged once per set of files (and
        again only if its reason changes, e.g. from a failed check to a verdict)."""
        if self.gate is None:
            return True
        failure = None
        try:
            reason = self.gate(self._current, ruleset)
        except Exception as exc:  # fail closed: the rules in force stay until the gate answers
            failure = exc
            reason = f"the reload guard failed ({type(exc).__name__}: {exc}); asking again"
        if reason is None:
            return True
        if reason != self.quarantine_reason:
            self.refusals += 1
            log.error(
                "quarantined rules version %s; keeping version %s: %s",
                ruleset.version,
                self._version(),
                reason,
                exc_info=failure,
            )
        self.quarantined, self.quarantine_reason = ruleset, reason
        return False

    def watch(self, interval: float, stop: threading.Event) -> threading.Thread:
        """Poll the rules directory in a daemon thread until ``stop`` is set."""

        def run() -> None:
            while not stop.wait(interval):
                try:
                    self.reload()
                except Exception:  # keep watching; the current rules stay in force
                    log.exception("rules reload failed")

        thread = threading.Thread(target=run, name="rules-watch", daemon=True)
        thread.start()
        return thread
