"""``bridge quality``: what to fix in the HR records, in one report an HR admin can act on.

Four sections: duplicate identifiers the SCIM server refused that still hold (both records,
the attribute and value, first and last seen, how often; ``bridge quality dismiss ID`` once
dealt with); unknown role codes (per code: how many hold it, a few of them, the nearest known
code); people missing a required value, per rule file and attribute; and dead letters the LMS
refused for the data (category ``data_quality``). The rule-based sections come from a
read-only plan (``Planner.compute``: the plan's own attention items, so the report and
``bridge plan`` agree). Always exits 0 — it is a report; ``--json`` is for machines (format
``bridge-quality/1``, documented on :func:`quality_command`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import click

from bridge.cli.database import database
from bridge.cli.plans import actor
from bridge.cli.rules import check_rules
from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.cli.settings import store_options
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.feed_quality import feed_quality
from bridge.provision.planning import PlanError
from bridge.provision.planning import Planner
from bridge.provision.resources import now_utc
from bridge.rules.book import RuleBook
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleSet
from bridge.rules.plan import EXAMPLES
from bridge.rules.plan import AttentionItem
from bridge.rules.plan import Plan
from bridge.schemas import Catalog
from bridge.store import feed_people
from bridge.store import outbox
from bridge.store import refusals
from bridge.store import webhook_events
from bridge.store import webhook_refusals
from bridge.store.resources import ResourceStore

FORMAT = "bridge-quality/1"
DATA_QUALITY = "data_quality"
_MISSING = re.compile(r"^missing required (?P<attribute>\S+) \(from (?P<source>.+?)\)(?::| —|$)")
_FAILED = re.compile(r"^(?P<attribute>[A-Za-z0-9_.\-]+): ")


@dataclass
class _Group:
    rule_file: str | None
    attribute: str | None
    source: str | None = None
    people: dict[str, str] = field(default_factory=dict)
    """person id → label."""
    reasons: dict[str, None] = field(default_factory=dict)

    def as_dict(self, *, missing: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule_file": self.rule_file,
            "attribute": self.attribute,
            "count": len(self.people),
            "examples": sorted(self.people.values())[:EXAMPLES],
        }
        if missing:
            out["source"] = self.source
        else:
            out["reasons"] = list(self.reasons)[:EXAMPLES]
        return out


def problem_groups(
    items: Iterable[AttentionItem],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The engine's problems by rule file and attribute: (missing required values, the rest).

    The attribute is read from the engine's reason (``missing required email (from …)``, or
    ``email: …`` for a transform that failed). Each group counts people (a person once), with
    a few of them by name (sorted).
    """
    missing: dict[tuple[str | None, str, str], _Group] = {}
    other: dict[tuple[str | None, str | None], _Group] = {}
    for item in items:
        if item.kind != "problem":
            continue
        person = item.person or "?"
        found = _MISSING.match(item.reason)
        if found is not None:
            key = (item.rule_file, found["attribute"], found["source"])
            group = missing.setdefault(key, _Group(*key))
        else:
            named = _FAILED.match(item.reason)
            attribute = named["attribute"] if named is not None else None
            group = other.setdefault((item.rule_file, attribute), _Group(item.rule_file, attribute))
            group.reasons.setdefault(item.reason)
        group.people.setdefault(person, item.label or person)
    order = sorted(missing.values(), key=lambda g: (-len(g.people), g.rule_file or "", g.attribute))
    rest = sorted(
        other.values(), key=lambda g: (-len(g.people), g.rule_file or "", g.attribute or "")
    )
    return [g.as_dict(missing=True) for g in order], [g.as_dict(missing=False) for g in rest]


def unknown_codes(plan: Plan) -> list[dict[str, Any]]:
    """The plan's unknown role codes (one item per code), the most widely held first."""
    found = [
        {**item.details, "reason": item.reason}
        for item in plan.attention
        if item.kind == "unknown-role-code"
    ]
    return sorted(found, key=lambda code: (-int(code.get("count", 0)), str(code.get("code"))))


def _rules(settings: Settings, catalog: Catalog) -> tuple[RuleBook, str | None]:
    """The rules, or why the rule-based sections cannot be computed."""
    book = RuleBook(settings.rules_dir, lambda d: check_rules(d, catalog))
    try:
        book.load()
    except RuleErrors as exc:
        count = len(exc.errors)
        return book, (
            f"the rules in {settings.rules_dir} do not check clean ({count} error"
            f"{'' if count == 1 else 's'}): run `bridge rules check`"
        )
    return book, None


def _dead_letters(conn: Any, store: ResourceStore) -> dict[str, Any]:
    rows = outbox.dead_letters(conn, category=DATA_QUALITY, limit=100_000)
    examples = []
    for row in rows[:EXAMPLES]:
        intent = row["intent"]
        person = str(intent.get("person") or "")
        record = store.get(conn, "User", person) if person else None
        examples.append(
            {
                "id": row["id"],
                "target": row["target"],
                "person": person,
                "label": record.name if record is not None else None,
                "intent": f"{intent.get('kind')} {intent.get('ref') or ''}".strip(),
                "error": row.get("last_error"),
            }
        )
    return {"category": DATA_QUALITY, "count": len(rows), "examples": examples}


def quality_report() -> dict[str, Any]:
    """The report (``bridge quality --json``), from the database and rules of the environment."""
    settings = load_settings()
    catalog = load_schemas(settings)
    book, rules_problem = _rules(settings, catalog)
    plan: Plan | None = None
    with database(settings) as db:
        provisioner = Provisioner(db, catalog, rules=book.current, **store_options(settings))
        if rules_problem is None:
            planner = Planner(db, provisioner.store, catalog, book.current, now_utc)
            try:
                plan = planner.compute().plan  # read-only: the plan's own attention items
            except PlanError as exc:
                rules_problem = f"no plan: {exc}"
        with db.read() as conn:
            refused = refusals.unresolved(conn)
            dead = _dead_letters(conn, provisioner.store)
            ruleset = book.current() if rules_problem is None else None
            feeds = _feeds(conn, ruleset)
    missing, other = problem_groups(plan.attention if plan is not None else [])
    return {
        "format": FORMAT,
        "generated_at": now_utc().isoformat(),
        "population": plan.population if plan is not None else None,
        "rules_version": plan.rules_version if plan is not None else None,
        "rules_problem": rules_problem,
        "duplicates_refused": [{**r.as_dict(), "reason": r.reason()} for r in refused],
        "unknown_role_codes": unknown_codes(plan) if plan is not None else [],
        "missing_values": missing,
        "other_problems": other,
        "dead_letters": dead,
        "feeds": feeds,
    }


def _feeds(conn: Any, ruleset: RuleSet | None) -> dict[str, Any]:
    """Per HR feed: its webhook events by state, and the ones it could not apply (why, and
    what to fix in the HRIS); the requests refused before anything was stored (unsigned,
    forged, stale); its last full export; the emails and role codes of its people to fix.
    A feed with stored events but no longer declared shows too."""
    declared = set(ruleset.feeds) if ruleset is not None else set()
    found: dict[str, Any] = {}
    for name in sorted(declared | set(webhook_events.feeds(conn))):
        failed = webhook_events.of_state(conn, webhook_events.FAILED, feed=name, limit=5)
        last = feed_people.last_accepted(conn, name)
        found[name] = {
            "declared": name in declared,
            "last_export": None
            if last is None
            else {
                "run": last["run_id"],
                "at": _iso(last["created"]),
                "people": last.get("people"),
                "counts": {k: last.get(k, 0) for k in ("create", "update", "deactivate")},
                "rejected": last.get("rejected", 0),
                "rejected_rows": last.get("rejected_rows", []),
                "failed_rows": last.get("failed_rows", []),
                "not_in_export": last.get("deactivated", []),
            },
            "events": webhook_events.counts(conn, name),
            "refused": [
                {
                    "kind": r["kind"],
                    "error": r["error"],
                    "count": r["count"],
                    "last_reason": r["last_reason"],
                    "first_at": _iso(r["first_at"]),
                    "last_at": _iso(r["last_at"]),
                }
                for r in webhook_refusals.of_feed(conn, name)
            ],
            "people": feed_quality(feed_people.active_people(conn, name), ruleset),
            "failed_examples": [
                {
                    "event_id": e.event_id,
                    "event": e.event_type,
                    "externalId": e.external_id,
                    "received": e.received.isoformat(),
                    "why": e.detail,
                }
                for e in failed
            ],
        }
    return found


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


REFUSAL_FIX = {
    "unsigned": "the HRIS sends no signature: set up signing with the feed's secret",
    "forged": "the signature matches no secret: the HRIS and the bridge hold different "
    "secrets (check the feed's secrets: env variables, or a rotation half done)",
    "stale": "the timestamp is outside the tolerance: check the HRIS's clock, or its retries "
    "of old events",
    "not configured": "no secret is set in the bridge for this feed: set its env variable",
    "unknown token": "the upload's bearer token is unknown or revoked: create one with "
    "`bridge tokens create NAME --scope write`",
    "forbidden": "the upload's bearer token lacks the write scope: give the transfer job a "
    "token of the write scope",
}


def _people(count: int) -> str:
    return f"{count} {'person' if count == 1 else 'people'}"


def _shown(examples: list[str], count: int) -> str:
    shown = list(examples) + ([f"+{count - len(examples)} more"] if count > len(examples) else [])
    return ", ".join(shown)


def render_report(report: dict[str, Any]) -> str:
    """The report for people: one section per kind of problem, each saying what to do."""
    out = []
    head = "Data quality"
    if report["population"] is not None:
        head += f" — {_people(report['population'])} stored, rules {report['rules_version']}"
    out.append(f"{head} — {report['generated_at']}")
    if report["rules_problem"]:
        out.append(f"  (role codes and missing values not checked: {report['rules_problem']})")

    refused = report["duplicates_refused"]
    out += ["", f"Duplicate identifiers refused by SCIM, still unresolved ({len(refused)}):"]
    for item in refused:
        holder, other = item["holder"], item["refused"]
        times = "once" if item["count"] == 1 else f"{item['count']} times"
        out.append(
            f"  #{item['id']} {item['resource_type']} {item['attribute']} {item['value']}: "
            f"held by {holder['userName'] or holder['id']}"
            + (f" (externalId {holder['externalId']})" if item["attribute"] != "externalId" else "")
        )
        out.append(
            f"      refused: {item['op']} of {other['userName']}"
            + (f" (externalId {other['externalId']})" if item["attribute"] != "externalId" else "")
            + f", {times}, first {item['first_seen']}, last {item['last_seen']}, by {item['actor']}"
            + (f" (request {item['request_id']})" if item["request_id"] else "")
        )
    if refused:
        out.append(
            "  fix the HR record that is wrong (one id, one person); the IdP's next push then "
            "succeeds, or `bridge quality dismiss ID` once dealt with"
        )
    else:
        out.append("  none")

    codes = report["unknown_role_codes"]
    out += ["", f"Unknown role codes ({len(codes)}):"]
    out += [f"  {code['reason']}" for code in codes] or ["  none"]
    if codes:
        out.append("  fix the code in the HR system, or declare it in the role-code catalogue")

    missing = report["missing_values"]
    out += ["", "Missing required values (the person gets no account until HR fills them):"]
    for group in missing:
        out.append(
            f"  [{group['rule_file']}] {group['attribute']} (from {group['source']}): "
            f"{_people(group['count'])} ({_shown(group['examples'], group['count'])})"
        )
    if not missing:
        out.append("  none")
    other = report["other_problems"]
    if other:
        out += ["", "Values the mapping could not take:"]
    for group in other:
        out.append(
            f"  [{group['rule_file']}] {group['reasons'][0]}: "
            f"{_people(group['count'])} ({_shown(group['examples'], group['count'])})"
        )

    dead = report["dead_letters"]
    out += [
        "",
        f"Refused by the LMS for the data (dead letters, {dead['category']}): {dead['count']}",
    ]
    for row in dead["examples"]:
        who = row["label"] or row["person"]
        out.append(f"  #{row['id']} {row['target']} {row['intent']} for {who}: {row['error']}")
    if dead["count"]:
        out.append(f"  `bridge errors --category {dead['category']}` lists them all")
    for name, feed in report.get("feeds", {}).items():
        events = feed["events"]
        said = ", ".join(f"{n} {state}" for state, n in events.items() if n) or "none yet"
        note = "" if feed["declared"] else " (no longer in feeds.yaml)"
        out += ["", f"HR feed {name}{note}: webhook events {said}"]
        for event in feed["failed_examples"]:
            out.append(
                f"  {event['event_id']} {event['event']} for {event['externalId']}: {event['why']}"
            )
        if events.get(webhook_events.FAILED):
            out.append("  fix the record in the HRIS and send the event again (a new event id)")
        for refusal in feed["refused"]:
            what = "webhook(s)" if refusal["kind"] == "event" else "export upload(s)"
            out.append(
                f"  {refusal['count']} {what} refused ({refusal['error']}) from "
                f"{refusal['first_at']} to {refusal['last_at']}: {refusal['last_reason']}"
            )
            fix = REFUSAL_FIX.get(refusal["error"])
            if fix:
                out.append(f"    {fix}")
        checks = feed["people"]
        for key, title in (
            ("missing_email", "no work email"),
            ("invalid_email", "a work email that is not an address"),
        ):
            finding = checks[key]
            if finding["count"]:
                out.append(
                    f"  {_people(finding['count'])} with {title} "
                    f"({_shown(finding['examples'], finding['count'])}): {finding['fix']}"
                )
        for code in checks["unknown_role_codes"]:
            out.append(
                f"  role code {code['code']!r} held by {_people(code['count'])} "
                f"({_shown(code['examples'], code['count'])}): {code['fix']}"
            )
        export = feed["last_export"]
        if export is not None:
            counts = export["counts"]
            out.append(
                f"  last full export {export['at']} (run {export['run']}): {export['people']} "
                f"people; {counts['create']} new, {counts['update']} changed, "
                f"{counts['deactivate']} not in the export (deactivated), "
                f"{export['rejected']} row(s) rejected"
            )
            for rejected in [*export["rejected_rows"], *export["failed_rows"]]:
                out.append(
                    f"    line {rejected['line']} ({rejected['field']}"
                    + (f", {rejected['external_id']}" if rejected.get("external_id") else "")
                    + f"): {rejected['fix']}"
                )
            if export["not_in_export"]:
                shown = _shown(export["not_in_export"], counts["deactivate"])
                out.append(f"    not in the export: {shown} (check they really left)")
        if events.get(webhook_events.IGNORED):
            out.append(
                f"  {events[webhook_events.IGNORED]} ignored: older than the person's last "
                "applied event (out of order), or a termination for someone never provisioned"
            )
    return "\n".join(out)


@click.group(name="quality", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="The report as JSON (bridge-quality/1).")
@click.pass_context
def quality_command(context: click.Context, as_json: bool) -> None:
    """Data quality: duplicate ids refused by SCIM, unknown role codes, missing required
    values, dead letters of category data_quality. Exits 0 (a report).

    ``--json``: ``{"format": "bridge-quality/1", "generated_at", "population",
    "rules_version", "rules_problem" (why the rule-based sections are empty, or null),
    "duplicates_refused": [{"id", "resource_type", "attribute", "value", "holder": {"id",
    "userName", "externalId"}, "refused": {"id", "userName", "externalId"}, "op", "actor",
    "request_id", "first_seen", "last_seen", "count", "reason"}], "unknown_role_codes":
    [{"code", "count", "examples", "suggestion", "reason"}], "missing_values": [{"rule_file",
    "attribute", "source", "count", "examples"}], "other_problems": [{"rule_file",
    "attribute", "count", "examples", "reasons"}], "dead_letters": {"category", "count",
    "examples": [{"id", "target", "person", "label", "intent", "error"}]}}``.
    """
    if context.invoked_subcommand is not None:
        return
    report = quality_report()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(render_report(report))


@quality_command.command(name="dismiss")
@click.argument("refusal_id", type=int)
def dismiss_command(refusal_id: int) -> None:
    """Mark a refused duplicate as dealt with (it comes back if the IdP is refused again)."""
    with database(load_settings()) as db, db.write() as conn:
        found = refusals.dismiss(conn, refusal_id, actor=actor(), now=now_utc())
    if not found:
        raise click.ClickException(f"no refusal {refusal_id} (see `bridge quality`)")
    click.echo(f"refusal {refusal_id} dismissed; it comes back if the same write is refused again")
