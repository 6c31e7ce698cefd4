"""The ``bridge`` command: the composition root, the only place that reads configuration.

Each module owns one noun and its commands; this one owns the group and names them. A
subcommand's module is imported only when that subcommand runs (click's lazy-group pattern):
``bridge --help``, ``--version`` and shell completion load none of them, so they never pay
for the database, HTTP and SCIM libraries.
"""

from __future__ import annotations

import importlib

import click
from click.shell_completion import CompletionItem

__all__ = ["main"]

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("bridge.cli.serving:serve", "Run the SCIM server and the relay to the LMS."),
    "relay": ("bridge.cli.relay:relay_command", "Deliver outbox rows to the LMS targets."),
    "config": ("bridge.cli.config:config_command", "The effective settings, secrets masked."),
    "db": ("bridge.cli.database:db_group", "Database maintenance."),
    "tokens": ("bridge.cli.tokens:tokens_group", "Bearer tokens for SCIM clients."),
    "rules": ("bridge.cli.rules:rules_group", "Check and test the YAML rule files."),
    "targets": ("bridge.cli.targets:targets_group", "The LMS targets the rules drive."),
    "plan": ("bridge.cli.plans:plan_command", "Desired vs what the LMS confirmed, per person."),
    "apply": ("bridge.cli.plans:apply_command", "Enqueue a saved plan in one transaction."),
    "approve": ("bridge.cli.plans:approve_command", "Release a quarantined or held run."),
    "reject": ("bridge.cli.plans:reject_command", "Cancel a quarantined or held run."),
    "explain": ("bridge.cli.plans:explain_command", "Why one person gets what they get."),
    "journal": ("bridge.cli.journal:journal_command", "Read the change journal (delta feed)."),
    "errors": ("bridge.cli.errors:errors_group", "Dead letters: list, show, retry, skip."),
    "revert": ("bridge.cli.revert:revert_command", "Plan the inverse of a change or a run."),
    "reconcile": ("bridge.cli.reconcile:reconcile_command", "Compare the LMS with the bridge."),
    "sync": ("bridge.cli.sync:sync_command", "Reconcile an HR feed with its full export."),
    "quality": ("bridge.cli.quality:quality_command", "Data problems to fix in the HR records."),
    "training": ("bridge.cli.training:training_command", "Who must take, took, is overdue."),
    "stats": ("bridge.cli.stats:stats_command", "Freshness, backlog and errors per target."),
    "runs": ("bridge.cli.runs:runs_command", "Past and next scheduled runs."),
    "demo": ("bridge.cli.demo:demo_command", "The guide's pilot, compressed, with a report."),
    "lmssim": ("bridge.cli.demo:lmssim_command", "Run the LMS simulator (Moodle + Canvas)."),
}
"""Each subcommand: ``module:attribute`` of its click command, and its line in ``--help``."""


class LazyGroup(click.Group):
    """A group whose subcommands are imported by name on first use (click's documented
    ``LazyGroup``), listed in ``--help`` and completed from ``SUBCOMMANDS`` without an import."""

    def __init__(self, *args: object, lazy: dict[str, tuple[str, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        path, short_help = self.lazy[cmd_name]
        module_name, _, attribute = path.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{path} is not a click command")
        command.short_help = short_help
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        items = [
            CompletionItem(name, help=short_help)
            for name, (_path, short_help) in sorted(self.lazy.items())
            if name.startswith(incomplete)
        ]
        return items + click.Command.shell_complete(self, ctx, incomplete)


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(
    package_name="scim-lms-bridge", prog_name="bridge", message="%(prog)s %(version)s"
)
def main() -> None:
    """A declarative SCIM 2.0 provisioning bridge from identity providers and HRIS to an LMS.

    Configured by BRIDGE_* environment variables (`bridge config` shows them). Exit codes:
    0 success, 1 error, 2 a bad option or setting (`bridge plan --detailed-exitcode`: 2 is
    changes present, any failure 1).
    """
