"""``bridge demo``'s report: :func:`render` prints ``run_demo``'s summary for an HR admin.

Plain words, not the bridge's vocabulary: HTTP answers are said as what happened to the
record, outbox rows are "changes for the LMS", and the IdP quirks the SCIM server tolerated
are described rather than named. Every table fits 80 columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.demo.readback import CATEGORIES
from bridge.demo.sample import PILOT_DEPARTMENT

ANSWERS = {
    "200": "updated",
    "201": "created",
    "204": "done",
    "400": "invalid",
    "409": "refused",
}
"""SCIM answers (RFC 7644 §3.12) as what happened to the HR record."""

QUIRKS = {
    "op_case": 'operation names in capitals ("Replace")',
    "boolean_string": 'true/false sent as text ("False")',
    "remove_with_value": "a removal that also names the value",
    "manager_bare_string": "a manager given as a bare id",
    "attribute_path_keys": "attribute paths used as keys",
    "patch_schemas_missing": "a change without its schema name",
    "unqualified_extension_attribute": "an HR attribute without its schema name",
    "unknown_schema_urn": "an unknown schema name",
    "username_nfkc": "a user name in an unusual Unicode form",
}
"""The SCIM server's tolerances (bridge/scim/quirks.py), in words for an HR admin."""


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def answers_in_words(answers: Mapping[str, int], sep: str = ", ") -> str:
    """``{"201": 217, "409": 3}`` → ``217 created, 3 refused``."""
    return sep.join(
        f"{n} {ANSWERS.get(code, f'failed (HTTP {code})')}" for code, n in answers.items()
    )


def quirks_in_words(used: Mapping[str, int]) -> str:
    """The tolerances a day's writes used, described, with how many writes used each."""
    return "; ".join(
        f"{QUIRKS.get(name, name.replace('_', ' '))} ({_plural(n, 'time', 'times')})"
        for name, n in used.items()
    )


def render(summary: dict[str, Any], console: Console) -> None:
    """The report ``bridge demo`` prints, from ``run_demo``'s summary."""
    console.rule("Report (read back from the bridge and the LMS simulator)")
    _runs(summary, console)
    _lms(summary, console)
    _errors(summary, console)
    _history(summary, console)


def _runs(summary: dict[str, Any], console: Console) -> None:
    day1, day2, draw = summary["day1"], summary["day2"], summary.get("draw")
    overview = Table(title="What happened", title_justify="left")
    overview.add_column("step")
    overview.add_column("HR records")
    overview.add_column("LMS changes", justify="right")
    overview.add_column("delivered", justify="right")
    overview.add_column("failed", justify="right")
    overview.add_column("seconds", justify="right")
    brake = summary.get("brake")
    steps = [
        ("day 1 hires", day1),
        ("day 1 draw", draw),
        ("day 2 changes", day2),
        ("day 2 approval", brake),
    ]
    for label, phase in steps:
        if phase is None:
            continue
        overview.add_row(
            label + (" [red](timed out)[/]" if phase["timed_out"] else ""),
            answers_in_words(phase["answers"], "\n") if phase["requests"] else "-",
            *(
                str(n) if n or phase["lms_changes"] or phase["delivered"] else "-"
                for n in (phase["lms_changes"], phase["delivered"], phase["failed"])
            ),
            f"{phase['seconds']:.1f}",
        )
    console.print(overview)
    if brake is not None:
        console.print(
            f"Day 2 would have removed {_plural(brake['held'], 'more person', 'more people')} "
            f"than the rules allow at once ({brake['allowed']}): those removals waited for an "
            "admin's review. "
            f"The admin approved them (`bridge approve {brake['run']}`) and they were delivered."
        )
    if draw is not None:
        console.print(
            f"Sending the HR records seated nobody in the pilot's {draw['max_people']} seats: "
            "seats are drawn, not given in the order people arrive. The draw (`bridge plan`, "
            f"then `bridge apply`, run {draw['run_id']}) seated {draw['drawn']} of "
            f"{draw['candidates']} eligible people by a repeatable lottery for "
            f"{draw['free_seats']} free seats."
        )
    covered = ", ".join(
        f"{n} of them covered by the {escape(name)} rules"
        for name, n in summary["in_scope"].items()
    )
    console.print(
        f"HR sample: {summary['hr_records']} records, {summary['pilot_department_records']} in "
        f"{PILOT_DEPARTMENT} (the pilot) and {summary['other_department_records']} in other "
        f"departments. The bridge holds {summary['population']} people"
        + (f"; {covered}." if covered else ".")
    )


def _lms(summary: dict[str, Any], console: Console) -> None:
    lms = summary["lms"]
    accounts = Table(title="LMS accounts (simulated Moodle)", title_justify="left")
    for column in ("created", "active", "suspended", "known to the bridge"):
        accounts.add_column(column, justify="right")
    accounts.add_row(
        str(lms["accounts"]),
        str(lms["accounts_active"]),
        str(lms["accounts_suspended"]),
        str(summary["linked_accounts"]),
    )
    console.print(accounts)

    courses = Table(title="Enrolments by course", title_justify="left")
    courses.add_column("course")
    courses.add_column("active", justify="right")
    courses.add_column("suspended (progress kept)", justify="right")
    for course, found in lms["enrolments"].items():
        courses.add_row(escape(course), str(found["active"]), str(found["suspended"]))
    for cohort, members in lms["cohort_members"].items():
        courses.add_row(f"cohort {escape(cohort)}", str(members), "")
    console.print(courses)


def _errors(summary: dict[str, Any], console: Console) -> None:
    errors = Table(title="Errors by category", title_justify="left")
    errors.add_column("category")
    errors.add_column("held back by bridge", justify="right")
    errors.add_column("refused by LMS", justify="right")
    for name, title in CATEGORIES.items():
        counts = summary["errors"][name]
        errors.add_row(title, str(counts["held_back"]), str(counts["refused_by_lms"]))
    console.print(errors)
    for row in summary["dead_letters"]:
        console.print(
            escape(f"  change #{row['id']} ({row['intent']}) refused by the LMS: {row['error']}")
        )

    rows = summary["problems"]
    people = Table(
        title=f"People needing attention ({len(rows)}): fix these in the HR system",
        title_justify="left",
    )
    people.add_column("what")
    people.add_column("person")
    people.add_column("why")
    for row in rows:
        people.add_row(escape(row["what"]), escape(row["person"]), escape(row["why"]))
    if rows:
        console.print(people)


def _history(summary: dict[str, Any], console: Console) -> None:
    log = summary["journal"]
    since = log["day1_last_seq"]
    at = str(log["day2_since"] or "")[:19].replace("T", " ")
    console.print(
        f"History (`bridge journal`): day 1 is entries 1–{since}; day 2 is entries "
        f"{log['day2_first_seq']}–{log['day2_last_seq']} "
        f"({_plural(log['day2_writes'], 'change', 'changes')} from HR, "
        f"{_plural(log['day2_deliveries'], 'delivery', 'deliveries')} to the LMS), "
        f"from {at} UTC."
    )
    if log["day2_tolerances"]:
        console.print(
            "Unusual but harmless things the IdP sent on day 2, accepted and recorded: "
            + escape(quirks_in_words(log["day2_tolerances"]))
            + "."
        )
    left = summary["pending_changes"]
    delivered = summary["outbox"].get("done", 0)
    agreement = (
        "the bridge and the LMS agree: nothing is left to change for anyone"
        if left == 0
        else f"{_plural(left, 'change is', 'changes are')} still to make (`bridge plan`)"
    )
    console.print(
        f"Check: {agreement} ({_plural(delivered, 'change', 'changes')} delivered in all)."
    )
    if summary["kept"]:
        env = f"export BRIDGE_DATABASE_URL={summary['database_url']}"
        if summary["rules_kept"]:
            env += f" BRIDGE_RULES={summary['rules_dir']}"
        env += f" BRIDGE_SCHEMAS={summary['schemas_dir']}"
        lines = [env, f"bridge journal --since {since}    # the day-2 changes, before and after"]
        if summary["rules_kept"]:
            lines.append(
                f"bridge revert --since {log['day2_since']}    # plan their undo; --apply does it"
            )
        lines.append("bridge errors    # changes the LMS refused, by category")
        console.print(f"Database: {escape(summary['database'])} (kept). Look inside with:")
        for line in lines:
            console.print(f"  {escape(line)}", soft_wrap=True)
    else:
        console.print(
            f"Database: {escape(summary['database'])} (removed). Run `bridge demo --keep` to "
            f"look inside afterwards with `bridge journal --since {since}` and `bridge revert`."
        )
    pilot = summary["pilot"]
    if pilot["max_people"] or pilot["ends"]:
        console.print(
            f"Pilot: the {escape(summary['rule_file'])} rules take at most "
            f"{pilot['max_people'] or 'any number of'} people"
            + (f", until {pilot['ends']}" if pilot["ends"] else "")
            + "."
        )
    if pilot["ended"]:
        console.print(
            f"[bold red]The pilot of {escape(summary['rule_file'])} ended on {pilot['ends']}: "
            "nobody new is admitted, so no account is created. Move `scope.pilot.ends` in the "
            "rule file.[/]"
        )
    console.print(f"Finished in {summary['seconds']:.1f} s.")
