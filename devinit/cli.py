"""devinit's command line: parse, call one core function, render its result.

One catch point: a ``DevinitError`` prints ``Error: <message>`` on stderr and exits 1;
anything else is a bug and keeps its traceback. Heavy modules are imported inside the
commands so that ``devinit --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from devinit import __version__
from devinit.errors import DevinitError

if TYPE_CHECKING:
    from devinit.docker_redis import PullProgress

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
    help="Deadline for a store call that has no timeouts of its own (PostgreSQL); Redis uses its "
    "readTimeout/dialTimeout metadata and SQLite its busyTimeout.",
)
@click.option(
    "--pid-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write this process's pid here once both ports listen (removed when it stops).",
)
@click.option(
    "--allowed-origins",
    default="",
    help="Web origins whose pages may call the HTTP API besides loopback ones, comma-separated "
    "(e.g. 'https://app.example.com'; '*' for any) [default: loopback pages only].",
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
    pid_file: Path | None,
    allowed_origins: str,
) -> None:
    """Run the state server in the foreground until Ctrl-C / SIGTERM / POST /v1.0/shutdown."""
    from devinit import paths
    from devinit.server.serve import ServeOptions
    from devinit.server.serve import serve as run

    opts = ServeOptions(
        components_path=components_path or paths.components_dir(),
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        app_id=app_id or None,
        api_token=api_token or os.environ.get("DAPR_API_TOKEN") or None,
        log_level=log_level,
        store_timeout=store_timeout,
        pid_file=pid_file,
        allowed_origins=tuple(o.strip() for o in allowed_origins.split(",") if o.strip()),
    )
    sys.exit(run(opts))


def _home_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="devinit's home (components in <home>/components) [default: $DEVINIT_HOME, else ~/.dapr].",
    )(f)


@cli.command()
@_home_option
@click.option(
    "--store",
    type=click.Choice(["redis", "sqlite"]),
    default=None,
    help="Redis in Docker, or the embedded SQLite store [default: as before, else redis when Docker answers].",
)
@click.option("--slim", is_flag=True, help="Same as --store sqlite: no Docker at all.")
@click.option("--image", default=None, help="Redis image to run [default: as before, else a pinned Redis 7].")
@click.option("--redis-port", type=click.IntRange(1, 65535), default=None, help="Host port for Redis [default: 6379 when free].")
@click.option("--http-port", type=click.IntRange(1, 65535), default=None, help="HTTP API port [default: as before, else 3500].")
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=None, help="gRPC API port [default: as before, else 50001].")
@click.option("--force", is_flag=True, help="Overwrite a component file devinit did not write or that was changed.")
@click.option(
    "--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True, help="Seconds to wait for Redis to answer."
)
def init(
    home: Path | None,
    store: str | None,
    slim: bool,
    image: str | None,
    redis_port: int | None,
    http_port: int | None,
    grpc_port: int | None,
    force: bool,
    timeout: float,
) -> None:
    """Set up Redis (or SQLite), the statestore component and the background state server."""
    from devinit import lifecycle
    from devinit.errors import UsageError

    if slim:
        if store == "redis":
            raise UsageError("--slim and --store redis contradict each other. Pass one of them")
        store = "sqlite"
    opts = lifecycle.InitOptions(home, store, image, redis_port, http_port, grpc_port, force, timeout)
    display = _PullDisplay()
    try:
        result = lifecycle.init(opts, on_pull=display)
    finally:
        display.finish()
    from devinit.render import render_init

    click.echo(render_init(result))


class _PullDisplay:
    """Pull progress on stderr: one redrawn line on a terminal, a line per finished layer otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_done = -1
        self.drawn = False

    def finish(self) -> None:
        """End the redrawn line, so that what follows starts on its own line."""
        if self.tty and self.drawn:
            click.echo("", err=True)

    def __call__(self, p: PullProgress) -> None:
        from devinit.render import pull_line

        line = pull_line(p)
        if self.tty:
            click.echo("\r" + line.ljust(79), nl=False, err=True)
            self.drawn = True
        elif p.layers_done != self.last_done:
            self.last_done = p.layers_done
            click.echo(line, err=True)


@cli.command()
@_home_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (shape in README.md).")
def status(home: Path | None, as_json: bool) -> None:
    """Show what runs and whether it is healthy; exit 0 only when all of it is."""
    import json

    from devinit import lifecycle
    from devinit.render import render_status

    result = lifecycle.status(home)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else render_status(result))
    sys.exit(0 if result.healthy else 1)


@cli.command()
@_home_option
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Also remove the Redis data volume, component files devinit wrote, SQLite data and logs.",
)
def uninstall(home: Path | None, everything: bool) -> None:
    """Stop the server and remove the container (data and component files stay without --all)."""
    from devinit import lifecycle
    from devinit.render import render_uninstall

    result = lifecycle.uninstall(home, everything)
    click.echo(render_uninstall(result))
    sys.exit(0 if result.ok else 1)


def main() -> None:
    """Console entry point: the one place DevinitError becomes a clean message."""
    try:
        cli(standalone_mode=True)
    except DevinitError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
