"""The ``bridge`` command: the composition root, the only place that reads configuration.

Each module owns one noun and its commands; this one owns the group and puts them in it.
"""

from __future__ import annotations

import click

from bridge.cli.database import db_group
from bridge.cli.demo import demo_command
from bridge.cli.demo import lmssim_command
from bridge.cli.errors import errors_group
from bridge.cli.journal import journal_command
from bridge.cli.plans import apply_command
from bridge.cli.plans import approve_command
from bridge.cli.plans import explain_command
from bridge.cli.plans import plan_command
from bridge.cli.plans import reject_command
from bridge.cli.quality import quality_command
from bridge.cli.reconcile import reconcile_command
from bridge.cli.relay import relay_command
from bridge.cli.revert import revert_command
from bridge.cli.rules import rules_group
from bridge.cli.runs import runs_command
from bridge.cli.serving import serve
from bridge.cli.stats import stats_command
from bridge.cli.sync import sync_command
from bridge.cli.targets import targets_group
from bridge.cli.tokens import tokens_group
from bridge.cli.training import training_command

__all__ = ["main"]


@click.group()
def main() -> None:
    """A declarative SCIM 2.0 provisioning bridge from identity providers and HRIS to an LMS."""


main.add_command(serve)
main.add_command(tokens_group)
main.add_command(db_group)
main.add_command(journal_command)
main.add_command(rules_group)
main.add_command(plan_command)
main.add_command(apply_command)
main.add_command(approve_command)
main.add_command(reject_command)
main.add_command(explain_command)
main.add_command(relay_command)
main.add_command(errors_group)
main.add_command(lmssim_command)
main.add_command(revert_command)
main.add_command(demo_command)
main.add_command(targets_group)
main.add_command(quality_command)
main.add_command(stats_command)
main.add_command(reconcile_command)
main.add_command(training_command)
main.add_command(runs_command)
main.add_command(sync_command)
