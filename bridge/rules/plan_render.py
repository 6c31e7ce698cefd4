"""The plan for people (pure): ``bridge plan``'s terraform-style text and its summary line.

Besides the changes to make, the text says where the other intents stand (DESIGN §4): the
failed ones (dead letters, still to make), those pending in the outbox, and those waiting on
a target whose health is not ok.
"""

from __future__ import annotations

from bridge.rules.plan_model import _SYMBOL
from bridge.rules.plan_model import ACTIONS
from bridge.rules.plan_model import EXAMPLES
from bridge.rules.plan_model import FAILED
from bridge.rules.plan_model import PENDING
from bridge.rules.plan_model import WAITING
from bridge.rules.plan_model import ActionCount
from bridge.rules.plan_model import AttentionItem
from bridge.rules.plan_model import Plan
from bridge.rules.plan_model import Tracked
from bridge.rules.plan_model import action_of

ATTENTION_LINES = 20
DELIVERY_LINES = 10
"""Lines per state in the delivery section (``--json`` lists every intent)."""
_LABELS = {action: label for action, _, _, label in ACTIONS}


_COLORS = {"+": "32", "~": "33", "-": "31", "bold": "1", "dim": "2", "red": "31", "green": "32"}


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_COLORS[style]}m{text}\x1b[0m" if color else text


def _examples(examples: list[str], count: int) -> str:
    if not count:
        return ""
    shown = list(examples)
    rest = count - len(shown)
    if rest > 0:
        shown.append(f"+{rest} more")
    return f"  ({', '.join(shown)})"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def summary_line(plan: Plan) -> str:
    """The last line of ``bridge plan``: ``Plan: 200 accounts to create, …; safety: ok.``"""
    people = plan.people_needing_attention
    attention = (
        f"{_plural(people, 'person needs', 'people need')} attention"
        if people
        else "0 people need attention"
    )
    quarantined = [v.rule_file for v in plan.safety if v.quarantined]
    safety = f"safety: quarantined ({', '.join(quarantined)})" if quarantined else "safety: ok"
    states = plan.state_counts()
    delivery = []
    if states[FAILED]:
        delivery.append(
            f"{_plural(states[FAILED], 'change', 'changes')} failed before (apply sends "
            + ("it" if states[FAILED] == 1 else "them")
            + " again)"
        )
    if states[PENDING]:
        delivery.append(f"{_plural(states[PENDING], 'intent', 'intents')} pending in the outbox")
    if states[WAITING]:
        delivery.append(f"{_plural(states[WAITING], 'intent', 'intents')} waiting on a target")
    on_the_way = "".join(f"{part}; " for part in delivery)
    if not plan.tracked:
        return f"No changes. {on_the_way}{attention}; {safety}."
    count = plan.count
    parts = [
        _plural(count("create_account"), "account to create", "accounts to create"),
        f"{count('update_account')} to update",
    ]
    if count("reactivate_account"):
        parts.append(f"{count('reactivate_account')} to reactivate")
    parts.append(_plural(count("enrol"), "enrolment", "enrolments"))
    if count("add_cohort_member"):
        parts.append(_plural(count("add_cohort_member"), "cohort membership", "cohort memberships"))
    suspensions = count("suspend_enrolment") + count("suspend_account")
    parts.append(_plural(suspensions, "suspension", "suspensions"))
    parts.append(_plural(count("unenrol") + count("remove_cohort_member"), "removal", "removals"))
    return f"Plan: {', '.join(parts)}; {on_the_way}{attention}; {safety}."


def _attention_lines(plan: Plan) -> list[str]:
    groups: dict[tuple[str, str], list[AttentionItem]] = {}
    for item in plan.attention:
        groups.setdefault((item.kind, item.reason), []).append(item)
    lines = []
    for (_, reason), items in groups.items():
        where = f"[{items[0].rule_file}] " if items[0].rule_file else ""
        if items[0].label is None:  # about several people: the reason names them
            lines.append(f"{where}{reason}")
        elif len(items) == 1:
            lines.append(f"{items[0].label}: {where}{reason}")
        else:
            labels = list(dict.fromkeys(item.label or "" for item in items))
            shown = labels[:EXAMPLES] + (
                [f"+{len(labels) - EXAMPLES} more"] if len(labels) > EXAMPLES else []
            )
            lines.append(
                f"{where}{reason}: {_plural(len(labels), 'person', 'people')} ({', '.join(shown)})"
            )
    if len(lines) > ATTENTION_LINES:
        rest = len(lines) - ATTENTION_LINES + 1
        lines = lines[: ATTENTION_LINES - 1] + [f"+{rest} more (bridge plan --json lists all)"]
    return lines


def _intent_label(entry: Tracked) -> str:
    intent = entry.intent
    text = _LABELS[action_of(intent)]
    if intent.ref is not None:
        text += f" {intent.ref}"
    return f"{entry.label or intent.person}: {text} [{intent.rule}]"


def _failed_line(entry: Tracked) -> str:
    row = entry.row
    if row is None:
        return _intent_label(entry)
    tries = f"{row.attempts} attempt" + ("" if row.attempts == 1 else "s")
    return f"{_intent_label(entry)} — {row.failure()} (outbox #{row.id}, {tries})"


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= DELIVERY_LINES:
        return lines
    rest = len(lines) - DELIVERY_LINES + 1
    return lines[: DELIVERY_LINES - 1] + [f"+{rest} more (bridge plan --json lists all)"]


def delivery_lines(plan: Plan) -> list[str]:
    """Where the intents that are not plain changes stand: failed, pending, waiting."""
    failed = [entry for entry in plan.tracked if entry.state == FAILED]
    pending = [entry for entry in plan.in_flight if entry.state == PENDING]
    waiting: dict[str, list[Tracked]] = {}
    for entry in plan.in_flight:
        if entry.state == WAITING:
            waiting.setdefault(entry.waiting or "", []).append(entry)
    held: dict[str, list[Tracked]] = {}
    for entry in plan.tracked:
        if entry.waiting:
            held.setdefault(entry.waiting, []).append(entry)
    out = []
    if held:
        count = sum(len(entries) for entries in held.values())
        out.append(
            f"  ‖ to make, but the target waits — apply enqueues them and they wait ({count}):"
        )
        out.extend(f"      its target waits — {line}" for line in _capped(_by_reason(held)))
    if failed:
        out.append(f"  ! failed, still to make — apply sends them again in place ({len(failed)}):")
        out.extend(f"      {line}" for line in _capped([_failed_line(e) for e in failed]))
    if pending:
        out.append(f"  … pending in the outbox, not sent again ({len(pending)}):")
        out.extend(
            f"      {line}"
            for line in _capped([f"{_intent_label(e)} — {e.describe()}" for e in pending])
        )
    if waiting:
        count = sum(len(entries) for entries in waiting.values())
        out.append(f"  ‖ waiting on a target, not sent ({count}):")
        out.extend(f"      {line}" for line in _capped(_by_reason(waiting)))
    return out


def _by_reason(groups: dict[str, list[Tracked]]) -> list[str]:
    """One line per reason a target waits: how many intents, whose (a few examples)."""
    lines = []
    for reason, entries in groups.items():
        labels = list(dict.fromkeys(e.label or e.intent.person for e in entries))
        shown = labels[:EXAMPLES] + (
            [f"+{len(labels) - EXAMPLES} more"] if len(labels) > EXAMPLES else []
        )
        lines.append(f"{reason}: {_plural(len(entries), 'intent', 'intents')} ({', '.join(shown)})")
    return lines


def render_text(plan: Plan, *, color: bool = False) -> str:
    """The plan for people, terraform-style; ANSI colours when ``color``."""
    out = [
        _paint(f"Plan for rules {plan.rules_version}", "bold", color)
        + f" — {_plural(plan.population, 'person', 'people')} — generated {plan.generated_at}",
    ]
    if plan.only is not None:
        out.append(f"Only: {', '.join(plan.only)}")
    out.append("")
    width = max(len(label) for _, _, _, label in ACTIONS)
    for action, _, symbol, label in ACTIONS:
        tally = plan.counts.get(action, ActionCount())
        if not tally.count:
            continue
        line = (
            f"  {symbol} {label:<{width}}  {tally.count:>7}{_examples(tally.examples, tally.count)}"
        )
        out.append(_paint(line, symbol, color))
    if not plan.tracked:
        out.append("  (nothing to do)")

    delivery = delivery_lines(plan)
    if delivery:
        out.append("")
        out.append(_paint("Delivery (desired vs what the LMS confirmed):", "bold", color))
        out.extend(delivery)

    if plan.rules:
        out.append("")
        rule_width = max(len("rule"), *(len(rule) for rule in plan.rules))
        file_width = max(len("file"), *(len(r.rule_file) for r in plan.rules.values()))
        out.append(
            f"  {'rule':<{rule_width}}  {'file':<{file_width}}  {'+':>7}  {'~':>7}  {'-':>7}"
        )
        for rule_id, rule_count in plan.rules.items():
            sums = {"+": 0, "~": 0, "-": 0}
            for action, number in rule_count.counts.items():
                sums[_SYMBOL.get(action, "~")] += number
            out.append(
                f"  {rule_id:<{rule_width}}  {rule_count.rule_file:<{file_width}}  "
                f"{sums['+']:>7}  {sums['~']:>7}  {sums['-']:>7}"
            )

    if plan.attention:
        out.append("")
        people = plan.people_needing_attention
        out.append(_paint(f"Attention ({_plural(people, 'person', 'people')}):", "bold", color))
        out.extend(f"  ! {line}" for line in _attention_lines(plan))

    if plan.safety:
        out.append("")
        out.append(_paint("Safety:", "bold", color))
        for verdict in plan.safety:
            word = (
                _paint("QUARANTINED", "red", color)
                if verdict.quarantined
                else _paint("ok", "green", color)
            )
            out.append(f"  {verdict.rule_file}: {word} — {verdict.reason}")
        if plan.status == "quarantined":
            out.append("  the plan is quarantined: an admin must approve it before it is applied")

    out.append("")
    out.append(_paint(summary_line(plan), "bold", color))
    return "\n".join(out) + "\n"
