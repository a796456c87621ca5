"""devinit's command line: parse, call one core function, render its result.

One catch point: a ``DevinitError`` prints ``Error: <message>`` on stderr and exits 1;
anything else is a bug and keeps its traceback. Heavy modules are imported inside the
commands so that ``devinit --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from devinit import __version__
from devinit.errors import DevinitError

LOG_LEVELS = ("debug", "info", "warning", "error")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="devinit")
def cli() -> None:
    """Dapr's state management API on your laptop, in one command."""


@cli.command()
@click.option(
    "--components-path",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of Dapr component files [default: <home>/components, home being DEVINIT_HOME or ~/.dapr].",
)
@click.option("--http-port", type=click.IntRange(1, 65535), default=3500, show_default=True, help="HTTP API port.")
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=50001, show_default=True, help="gRPC API port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; keep loopback unless you mean it.")
@click.option("--app-id", default=None, help="App id: the default key prefix is '<app-id>||'.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.option("--api-token", default=None, help="Require this token in 'dapr-api-token' [default: $DAPR_API_TOKEN].")
@click.option(
    "--store-timeout",
    type=click.FloatRange(0.1, 600),
    default=10.0,
    show_default=True,
    help="Seconds a store call may take before the request fails with a 500.",
)
def serve(
    components_path: Path | None,
    http_port: int,
    grpc_port: int,
    host: str,
    app_id: str | None,
    log_level: str,
    api_token: str | None,
    store_timeout: float,
) -> None:
    """Run the state server in the foreground until Ctrl-C / SIGTERM."""
    from devinit import paths
    from devinit.server.serve import ServeOptions, serve as run

    opts = ServeOptions(
        components_path=components_path or paths.components_dir(),
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        app_id=app_id or None,
        api_token=api_token or os.environ.get("DAPR_API_TOKEN") or None,
        log_level=log_level,
        store_timeout=store_timeout,
    )
    sys.exit(run(opts))


def main() -> None:
    """Console entry point: the one place DevinitError becomes a clean message."""
    try:
        cli(standalone_mode=True)
    except DevinitError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
