"""Where the population stands before a plan looks at anyone: who each rule condition matches,
each rule file's projections, and each pilot's draw — read once, by ``plan``, ``apply`` and
``explain`` alike, so the three cannot disagree on who is in scope.

Conditions are evaluated in SQL (the same translator as SCIM filters: one query per
condition); the draw is :func:`bridge.rules.pilot.draw` over the people a scope filter
matches — SQL and one sort by hash, never a query per person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from scim2_models import ScimFilter

from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.pilot import Admission
from bridge.rules.pilot import Draw
from bridge.rules.pilot import admission
from bridge.rules.pilot import draw
from bridge.store import projections
from bridge.store.projections import Projection
from bridge.store.resources import ResourceStore


def conditions(ruleset: RuleSet) -> set[str]:
    """Every condition text of a rule set (scope filters and ``when``s, aliases expanded)."""
    texts: set[str] = set()
    for rule_file in ruleset.files:
        if rule_file.scope.filter:
            texts.add(rule_file.scope.filter)
        texts.update(a.when for a in rule_file.assignments)
    return texts


@dataclass(frozen=True)
class Standing:
    """Who each condition matches, each rule file's projections and its pilot's draw."""

    matches: dict[str, set[str]]
    projected: dict[str, dict[str, Projection]]
    draws: dict[str, Draw]
    today: date

    def verdicts(self, person_id: str) -> dict[str, bool]:
        """Condition text → whether it matches the person (what ``desired_state`` reads)."""
        return {text: person_id in found for text, found in self.matches.items()}

    def admitted(self, rule_file: RuleFile, person_id: str) -> bool:
        """Whether the rule file's scope (filter and pilot) takes the person after the draw."""
        return person_id in self.draws[rule_file.name].admitted

    def admission(self, rule_file: RuleFile, person_id: str, key: str) -> Admission:
        """Whether the rule file's scope takes the person, and why (``key``: the person's
        externalId, else id)."""
        scope = rule_file.scope
        previous = self.projected[rule_file.name].get(person_id)
        return admission(
            scope.pilot,
            person_id,
            key,
            admitted=previous is not None and previous.in_scope,
            in_filter=scope.filter is None or person_id in self.matches[scope.filter],
            today=self.today,
            draw=self.draws[rule_file.name],
        )


def read_standing(conn: Any, store: ResourceStore, ruleset: RuleSet, today: date) -> Standing:
    """Each condition's matches (one query each), the projections and the pilot draws."""
    matches = {
        text: store.ids_matching(conn, "User", ScimFilter(text).ast) for text in conditions(ruleset)
    }
    projected = {f.name: projections.of_rule_file(conn, f.name) for f in ruleset.files}
    keys = [(pid, external_id or pid) for pid, external_id in store.keys(conn, "User")]
    draws = {}
    for rule_file in ruleset.files:
        in_filter = matches[rule_file.scope.filter] if rule_file.scope.filter else None
        draws[rule_file.name] = draw(
            rule_file.scope.pilot,
            (k for k in keys if in_filter is None or k[0] in in_filter),
            staying={pid for pid, p in projected[rule_file.name].items() if p.in_scope},
            today=today,
            returning={pid for pid, p in projected[rule_file.name].items() if not p.in_scope},
        )
    return Standing(matches, projected, draws, today)
