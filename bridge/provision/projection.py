"""Projecting the rules onto the people a write touched, inside that write's transaction.

For each person and rule file: evaluate the conditions on the person (ScimFilter.match, as
the server's in-memory filters), compute the desired LMS state, diff it against the last
projection, store the new projection and enqueue the intents in the outbox — all in the
transaction of the SCIM write, so a crash loses neither the change nor the LMS calls; removals
past the rule file's safety threshold are held for approval (:mod:`bridge.provision.brake`).
Whether a pilot takes the person is :func:`bridge.rules.pilot.admission` with no draw: people
already admitted project as usual, a capped pilot's newcomers wait for ``bridge apply``.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bridge.provision import brake
from bridge.rules.engine import Desired
from bridge.rules.engine import desired_state
from bridge.rules.engine import diff
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.pilot import admission
from bridge.rules.verdicts import evaluate
from bridge.rules.verdicts import person_model
from bridge.schemas import Catalog
from bridge.store import projections
from bridge.store.projections import Projection
from bridge.store.resources import Member
from bridge.store.resources import Record
from bridge.store.resources import ResourceStore


def person_document(record: Record, groups: Iterable[Member] = ()) -> dict[str, Any]:
    """The SCIM JSON rules read: the stored document plus id, externalId and the groups the
    person is a direct member of (``groups_of``)."""
    doc = dict(record.doc)
    doc["id"] = record.id
    if record.external_id is not None:
        doc["externalId"] = record.external_id
    direct = [{"value": g.value, "display": g.display, "type": "direct"} for g in groups]
    if direct:
        doc["groups"] = direct
    return doc


def uses_groups(ruleset: RuleSet) -> bool:
    """Whether any condition or mapping reads a person's groups (then group changes project)."""
    for rule_file in ruleset.files:
        texts = [rule_file.scope.filter or "", *(a.when for a in rule_file.assignments)]
        texts += [m.source or "" for m in rule_file.mapping]
        if any("groups" in text.lower() for text in texts):
            return True
    return False


class Projector:
    """Runs the rules for the people one write touched."""

    def __init__(
        self,
        store: ResourceStore,
        catalog: Catalog,
        rules: Callable[[], RuleSet | None],
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.rules = rules

    def follows_groups(self) -> bool:
        ruleset = self.rules()
        return ruleset is not None and uses_groups(ruleset)

    def project(
        self,
        conn: Any,
        person_ids: Iterable[str],
        *,
        now: datetime,
        journal_seq: int | None,
        created: tuple[Record, Any] | None = None,
    ) -> int:
        """Project every rule file onto each person; the number of intents enqueued.

        ``created``: a user this write just created, with its validated model — it has no
        groups yet, so neither the row nor the model is read again.
        """
        ruleset = self.rules()
        if ruleset is None or not ruleset.files:
            return 0
        total = 0
        for person_id in dict.fromkeys(person_ids):
            doc: dict[str, Any] | None = None
            model = None
            if created is not None and created[0].id == person_id:
                doc, model = person_document(created[0]), created[1]
                for rule_file in ruleset.files:
                    total += self._one(
                        conn, rule_file, ruleset.version, person_id, doc, model, now, journal_seq
                    )
                continue
            record = self.store.get(conn, "User", person_id)
            if record is not None:
                doc = person_document(record, self.store.groups_of(conn, [person_id])[person_id])
                model = person_model(self.catalog, doc)
            for rule_file in ruleset.files:
                total += self._one(
                    conn, rule_file, ruleset.version, person_id, doc, model, now, journal_seq
                )
        return total

    def _one(
        self,
        conn: Any,
        rule_file: RuleFile,
        rules_version: str,
        person_id: str,
        doc: dict[str, Any] | None,
        model: Any,
        now: datetime,
        journal_seq: int | None,
    ) -> int:
        projection = projections.get(conn, rule_file.name, person_id)
        if doc is None or model is None:
            desired = Desired(in_scope=False)  # deleted: suspended in the LMS, never hard-deleted
        else:
            verdicts = evaluate(rule_file, model, self.catalog.user)
            scope = rule_file.scope
            # A live write never fills a capped pilot: a newcomer waits for the draw (the
            # next `bridge apply`, bridge.rules.pilot), so arrival order picks nobody; someone
            # seated before takes a free seat back (a revert or rehire restores them).
            returning = projection is not None and not projection.in_scope
            pilot = scope.pilot
            admitted = admission(
                pilot,
                person_id,
                str(doc.get("externalId") or person_id),
                admitted=projection is not None and projection.in_scope,
                in_filter=scope.filter is None or verdicts.get(scope.filter, False),
                today=now.date(),
                returning=returning,
                seat_free=returning
                and pilot is not None
                and pilot.max_people is not None
                and projections.count_in_scope(conn, rule_file.name) < pilot.max_people,
            ).admitted
            desired = desired_state(person_id, doc, rule_file, verdicts, admitted=admitted)
        intents, state = diff(
            person_id, desired, projection.state if projection else None, rule_file
        )
        if state is not None and (
            projection is None
            or state != projection.state
            or desired.in_scope != projection.in_scope
        ):
            projections.save(
                conn,
                Projection(rule_file.name, person_id, rule_file.target, desired.in_scope, state),
                existed=projection is not None,
                rules_version=rules_version,
                now=now,
            )
        return brake.enqueue(
            conn,
            rule_file,
            rules_version,
            (i.as_dict() for i in intents),
            now=now,
            journal_seq=journal_seq,
        )
