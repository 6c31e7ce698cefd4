"""``bridge demo``'s report: :func:`render` prints ``run_demo``'s summary."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.demo_readback import CATEGORIES
from bridge.demo_sample import PILOT_DEPARTMENT


def _command_exists(name: str) -> bool:
    from bridge.cli import main as cli

    return isinstance(cli, click.Group) and name in cli.commands


def render(summary: dict[str, Any], console: Console) -> None:
    """The report ``bridge demo`` prints, from ``run_demo``'s summary."""
    lms = summary["lms"]
    console.rule("Report (read back from the bridge's database and the LMS simulator)")
    day1, day2 = summary["day1"], summary["day2"]
    overview = Table(title="Runs", title_justify="left")
    for column in ("", "SCIM calls", "answers", "LMS intents", "settled", "seconds"):
        overview.add_column(column, justify="right" if column else "left")
    draw = summary.get("draw")
    phases = [("day 1: hires", day1), ("day 1: draw the pilot", draw), ("day 2: changes", day2)]
    for label, phase in phases:
        if phase is None:
            continue
        overview.add_row(
            label + (" [red](timed out)[/]" if phase["timed_out"] else ""),
            str(phase["requests"]) if phase["requests"] else "plan + apply",
            ", ".join(f"{n}×{code}" for code, n in phase["answers"].items()),
            str(phase["intents"]),
            str(phase["settled"]),
            f"{phase['seconds']:.1f}",
        )
    console.print(overview)
    if draw is not None:
        console.print(
            f"The SCIM push filled none of the pilot's {draw['max_people']} seats (a capped pilot "
            "is drawn, never filled in arrival order). Day 1's draw — `bridge plan` + `bridge "
            f"apply`, run {draw['run_id']} — seated {draw['drawn']} of {draw['candidates']} "
            f"eligible people by stable hash for {draw['free_seats']} free seats."
        )
    console.print(
        f"HR sample: {summary['hr_records']} records: {summary['pilot_department_records']} in "
        f"{PILOT_DEPARTMENT} (the pilot), {summary['other_department_records']} in other "
        f"departments. The bridge stores {summary['population']} people; "
        + ", ".join(f"{n} in scope of {escape(name)}" for name, n in summary["in_scope"].items())
        + "."
    )

    accounts = Table(title="LMS accounts (simulated Moodle)", title_justify="left")
    for column in ("created", "active", "suspended", "linked in the bridge"):
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

    errors = Table(title="Errors by category (dead letters)", title_justify="left")
    errors.add_column("category")
    errors.add_column("dead letters", justify="right")
    for name, title in CATEGORIES.items():
        errors.add_row(title, str(summary["errors"][name]))
    console.print(errors)
    for row in summary["dead_letters"]:
        console.print(escape(f"  #{row['id']} {row['category']}: {row['intent']}: {row['error']}"))

    attention = Table(
        title=f"People needing attention ({summary['people_needing_attention']} in the plan, "
        f"{len(summary['rejected'])} refused by SCIM)",
        title_justify="left",
    )
    attention.add_column("what", no_wrap=True)
    attention.add_column("person")
    attention.add_column("why")
    for item in summary["rejected"]:
        holder = f" is held by {item['held_by']}" if item.get("held_by") else ""
        attention.add_row(
            "duplicate id" if item["scimType"] == "uniqueness" else "refused",
            escape(item["userName"]),
            escape(
                f"POST answered {item['status']} {item['scimType'] or ''}: "
                f"externalId {item['externalId']}{holder}"
            ),
        )
    titles = {
        "problems": "missing data",
        "duplicates": "duplicate in LMS",
        "unknown_role_codes": "unknown role code",
    }
    for kind, items in summary["attention"].items():
        if kind not in titles:
            continue  # refused duplicates: the rows "refused by SCIM" above name them
        for item in items:
            attention.add_row(titles[kind], escape(item["person"]), escape(item["reason"]))
    console.print(attention)

    log = summary["journal"]
    console.print(
        f"Journal: day 1 is seqs 1–{log['day1_last_seq']}; day 2 is seqs "
        f"{log['day2_first_seq']}–{log['day2_last_seq']} ({log['day2_writes']} SCIM writes, "
        f"{log['day2_deliveries']} LMS deliveries), since {log['day2_since']}."
    )
    if log["day2_tolerances"]:
        used = ", ".join(f"{name} ×{n}" for name, n in log["day2_tolerances"].items())
        console.print(f"IdP quirks tolerated and journalled on day 2: {escape(used)}.")
    console.print(
        f"Drift: a plan over the whole population finds {summary['pending_changes']} "
        "change(s) left to make; outbox: "
        + ", ".join(f"{n} {status}" for status, n in summary["outbox"].items())
        + "."
    )
    since = log["day1_last_seq"]
    if summary["kept"]:
        env = f"export BRIDGE_DATABASE_URL={summary['database_url']}"
        if summary["rules_kept"]:
            env += f" BRIDGE_RULES={summary['rules_dir']}"
        env += f" BRIDGE_SCHEMAS={summary['schemas_dir']}"
        lines = [
            env,
            f"bridge journal --since {since}    # the day-2 changes, before and after",
        ]
        if summary["rules_kept"] and _command_exists("revert"):
            lines.append(
                f"bridge revert --since {log['day2_since']}    # plan their undo; --apply does it"
            )
        lines.append("bridge errors    # dead letters by category")
        console.print(f"Database: {escape(summary['database'])} (kept). Inspect it with:")
        for line in lines:
            console.print(f"  {escape(line)}", soft_wrap=True)
    else:
        console.print(
            f"Database: {escape(summary['database'])} (removed). Run `bridge demo --keep` to "
            f"inspect it afterwards with `bridge journal --since {since}` and `bridge revert`."
        )
    pilot = summary["pilot"]
    if pilot["max_people"] or pilot["ends"]:
        console.print(
            f"Pilot: {escape(summary['rule_file'])} admits at most "
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
