"""The ``actsearch`` command: run searches here or on a service, and read their results.

Each command group is its own module (``searching``, ``results``, ``keys``,
``schedules``, ``services``) and shares helpers only through :mod:`.common`;
nothing below the CLI imports this package. Every user mistake ends as one
``error: ...`` line and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from core.errors import ActsearchError

from . import common, results, searching
from .keys import keys_app
from .schedules import schedule_app
from .services import COMMANDS as SERVICE_COMMANDS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Which activation function should your network use? Search it on your data.")


@app.callback()
def _main(
    server: Annotated[str | None, typer.Option(
        envvar="ACTSEARCH_SERVER",
        help="URL of a running actsearch service (`actsearch serve` or the cluster's API); "
             "without it commands run embedded on this machine")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="ACTSEARCH_API_KEY",
                                                help="API key for --server")] = None,
) -> None:
    if server:
        from actsearch.client import ActsearchClient

        common.remote["client"] = ActsearchClient(server, api_key=api_key)


for _group in (searching.app, results.app):
    app.registered_commands.extend(_group.registered_commands)
for _name, _command in SERVICE_COMMANDS.items():
    app.command(_name)(_command)
app.add_typer(schedule_app, name="schedule")
app.add_typer(keys_app, name="keys")


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    try:
        app()
    except ActsearchError as exc:
        common.err_console.print(f"[bold red]error:[/] {exc.detail}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        common.err_console.print("interrupted")
        sys.exit(130)


__all__ = ["app", "main"]
