"""``denoiser alerts``: install the alert automations (:mod:`flows.alerts`)."""

from __future__ import annotations

import argparse

from flows.cli.options import HelpFormatter


def add_parser(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "alerts", help="send drift and failure alerts to a notification block",
        description="Create the automations of automations/alerts.yaml on the Prefect server in "
                    "$PREFECT_API_URL: a notification when a cleaning run's scans drift from the "
                    "folder's earlier runs, and when a run fails. Installing again replaces them.",
        formatter_class=HelpFormatter)
    command.add_argument("--block", required=True, metavar="TYPE/NAME",
                         help="the notification block, e.g. slack-webhook/ops, email/ops or "
                              "custom-webhook/ops (made under Blocks in the UI or with "
                              "`prefect block create TYPE`)")


def run(args: argparse.Namespace) -> int:
    from flows import alerts

    for automation in alerts.install(args.block):
        print(f"automation {automation.name} ({automation.id}): notifies {args.block}")
    return 0
