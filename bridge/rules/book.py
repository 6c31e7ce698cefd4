"""The rule set a running bridge uses, reloaded atomically: a set that fails its checks is
never half-applied — the last good one stays, and the refusal is logged with every problem.
Warnings a check returns (``RuleError.is_warning``) are logged and do not refuse a set."""

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
    """Holds the current RuleSet; ``reload`` swaps it only when the new one checks clean."""

    def __init__(self, directory: Path, check: Check) -> None:
        self.directory = directory
        self.check = check
        self._current: RuleSet | None = None
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self.last_refusal: list[RuleError] = []
        self.listeners: list[Callable[[RuleSet], None]] = []  # told of each new rule set
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
        """Re-read the rules if the files changed; True when a new set was taken."""
        with self._lock:
            seen = _fingerprint(self.directory)
            if seen == self._seen:
                return False
            self._seen = seen
            ruleset, found = self.check(self.directory)
            errors, warnings = _split(found)
            if errors or ruleset is None:
                self.last_refusal = errors
                log.error(
                    "refused the new rules; keeping version %s:\n%s",
                    self._current.version if self._current else "none",
                    "\n".join(str(e) for e in errors),
                )
                return False
            _warn(ruleset, warnings)
            previous = self._current.version if self._current else "none"
            self._current, self.last_refusal = ruleset, []
            log.info("rules reloaded: version %s (was %s)", ruleset.version, previous)
        for listener in self.listeners:
            listener(ruleset)
        return True

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
