"""devinit's command line: parse, call one core function, render its result.

One catch point: a ``DevinitError`` prints ``Error: <message>`` on stderr and exits 1;
anything else is a bug and keeps its traceback. Heavy modules are imported inside the
commands so that ``devinit --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
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
@click.option(
    "--api-token",
    default=None,
    help="Require this token in 'dapr-api-token' [default: $DAPR_API_TOKEN]. Prefer the variable: "
    "a command line is visible to every local user (ps).",
)
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


# --- devinit state / devinit ui: look inside the stores (state_client.py) ---------------------


def _server_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--http-port",
        type=click.IntRange(1, 65535),
        default=None,
        help="The state server's HTTP port [default: the server 'devinit init' started for this home, "
        "else $DAPR_HTTP_PORT, else 3500].",
    )(f)
    return _home_option(f)


def _store_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--store", default=None, help="State store [default: the server's only one, else statestore].")(f)


def _prefix_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--app-id", default=None, help="Only this app id's keys (those starting with '<app-id>||').")(f)
    return click.option("--prefix", default=None, help="Only keys starting with this, as stored (e.g. 'myapp||order-').")(f)


def _client(home: Path | None, http_port: int | None) -> Any:
    from devinit.state_client import StateClient, find_server

    return StateClient(find_server(home, http_port))


@cli.group()
def state() -> None:
    """Look inside the state stores: keys of every app id, as stored (e.g. 'myapp||order-1')."""


@state.command("ls")
@_server_options
@_store_option
@_prefix_options
@click.option("--limit", type=click.IntRange(1), default=None, help="List at most this many keys [default: all].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of {key, appId, size, etag, expireAt, ttl}.")
def state_ls(
    home: Path | None,
    http_port: int | None,
    store: str | None,
    prefix: str | None,
    app_id: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List keys with their app id, size, time left and etag (streamed, page by page)."""
    import orjson

    from devinit import state_client, state_render

    start = state_client.app_prefix(prefix, app_id)
    with _client(home, http_port) as c, _stdout_closed_quietly():
        rows = c.keys(c.resolve_store(store), start, limit)
        if as_json:
            _write_lines(_json_array(orjson.dumps(r.as_json()).decode() for r in rows))
        else:
            _write_lines(state_render.key_table(rows))


def _json_array(items: Iterator[str]) -> Iterator[str]:
    """A JSON array written as it streams: one element per line."""
    prev = next(items, None)
    if prev is None:
        yield "[]"
        return
    yield "["
    for item in items:
        yield f"  {prev},"
        prev = item
    yield f"  {prev}"
    yield "]"


def _write_lines(lines: Iterable[str], chunk: int = 1000) -> None:
    """Write lines to stdout a chunk at a time (one write per line is slow over a million keys)."""
    out = sys.stdout
    buf: list[str] = []
    for line in lines:
        buf.append(line)
        if len(buf) >= chunk:
            out.write("\n".join(buf) + "\n")
            buf = []
    if buf:
        out.write("\n".join(buf) + "\n")
    out.flush()


@contextlib.contextmanager
def _stdout_closed_quietly() -> Iterator[None]:
    """`devinit state ls | head`: stop without a traceback when the reader goes away."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)


@state.command("get")
@_server_options
@_store_option
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print {key, appId, etag, size, expireAt, ttl, contentType, value}.")
def state_get(home: Path | None, http_port: int | None, store: str | None, key: str, as_json: bool) -> None:
    """Print the value of KEY (as stored, e.g. 'myapp||order-1'): JSON pretty-printed, text as is,
    other bytes raw (a hex dump on a terminal)."""
    import json

    from devinit import state_render

    with _client(home, http_port) as c, _stdout_closed_quietly():
        doc = c.get(c.resolve_store(store), key)
        if as_json:
            click.echo(json.dumps(state_render.item_json(doc), indent=2, ensure_ascii=False))
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(state_render.value(doc, sys.stdout.isatty()))
            sys.stdout.buffer.flush()


@state.command("set")
@_server_options
@_store_option
@click.argument("key")
@click.argument("value")
@click.option("--etag", default=None, help="Write only if the key still has this etag (else exit 1).")
@click.option("--ttl", type=click.IntRange(1, 2**31 - 1), default=None, help="Expire after this many seconds [default: never].")
def state_set(
    home: Path | None, http_port: int | None, store: str | None, key: str, value: str, etag: str | None, ttl: int | None
) -> None:
    """Write VALUE under KEY (as stored): JSON when VALUE is JSON, else VALUE as a JSON string;
    '-' reads VALUE from stdin."""
    from devinit.state_client import value_body

    body = value_body(sys.stdin.read() if value == "-" else value)
    if etag:
        body["etag"] = etag
    if ttl is not None:
        body["ttl"] = ttl
    with _client(home, http_port) as c:
        name = c.resolve_store(store)
        doc = c.set(name, key, body)
    click.echo(f"Saved {key} in {name}" + (f"; etag {doc['etag']}" if doc else "") + ".")


@state.command("rm")
@_server_options
@_store_option
@click.argument("key")
@click.option("--etag", default=None, help="Delete only if the key still has this etag (else exit 1).")
def state_rm(home: Path | None, http_port: int | None, store: str | None, key: str, etag: str | None) -> None:
    """Delete KEY (as stored); without --etag also fine when it is not there."""
    with _client(home, http_port) as c:
        name = c.resolve_store(store)
        c.delete(name, key, etag)
    click.echo(f"Deleted {key} from {name}.")


@state.command("export")
@_server_options
@_store_option
@_prefix_options
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="File to write [default: stdout]."
)
def state_export(
    home: Path | None, http_port: int | None, store: str | None, prefix: str | None, app_id: str | None, output: Path | None
) -> None:
    """Write every key as JSON Lines: {key, value, contentType, ttl?} (JSON values as JSON, other
    bytes as base64; ttl: the seconds left). 'devinit state import' reads it back."""
    from devinit import state_client

    start = state_client.app_prefix(prefix, app_id)
    counter = _Counter("Exported", "keys")
    with _client(home, http_port) as c:
        name = c.resolve_store(store)
        if output is None:
            with _stdout_closed_quietly():
                count = c.export(name, sys.stdout.buffer, start, counter)
                sys.stdout.buffer.flush()
        else:
            f, finish = state_client.export_file(output)
            ok = False
            try:
                count = c.export(name, f, start, counter)
                ok = True
            finally:
                finish(ok)
    counter.finish()
    click.echo(f"Exported {count} keys from {name}" + (f" to {output}" if output else "") + ".", err=True)


class _Counter:
    """A count redrawn on one stderr line while it runs (on a terminal only)."""

    def __init__(self, verb: str, what: str) -> None:
        self.verb, self.what, self.n = verb, what, 0
        self.tty = sys.stderr.isatty()

    def __call__(self, n: int) -> None:
        self.n += n
        if self.tty:
            click.echo(f"\r{self.verb} {self.n} {self.what}...", nl=False, err=True)

    def finish(self) -> None:
        if self.tty and self.n:
            click.echo("\r" + " " * 40 + "\r", nl=False, err=True)


@state.command("import")
@_server_options
@_store_option
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
def state_import(home: Path | None, http_port: int | None, store: str | None, file: Path) -> None:
    """Write the keys of an export file (FILE, or - for stdin): values, content types and TTLs
    kept; existing keys are overwritten, so running it twice is safe."""
    from devinit.errors import UsageError

    with _client(home, http_port) as c:
        name = c.resolve_store(store)
        if str(file) == "-":
            count = c.import_lines(name, sys.stdin.buffer, "stdin")
        else:
            try:
                f = open(file, "rb")
            except OSError as e:
                raise UsageError(
                    f"cannot read {file}: {e.strerror}. Give the path of a file 'devinit state export' wrote"
                ) from None
            with f:
                length = os.fstat(f.fileno()).st_size
                if sys.stderr.isatty() and length > 1024 * 1024:
                    with click.progressbar(length=length, label=f"Importing {file.name}", file=sys.stderr) as bar:
                        count = c.import_lines(name, f, str(file), bar.update)
                else:
                    count = c.import_lines(name, f, str(file))
    click.echo(f"Imported {count} keys into {name}.")


@state.command("clear")
@_server_options
@_store_option
@_prefix_options
@click.option("--yes", is_flag=True, help="Do not ask: delete.")
def state_clear(
    home: Path | None, http_port: int | None, store: str | None, prefix: str | None, app_id: str | None, yes: bool
) -> None:
    """Delete every key of the store (or under --prefix / --app-id), of every app id."""
    from devinit import state_client
    from devinit.errors import UsageError

    start = state_client.app_prefix(prefix, app_id)
    with _client(home, http_port) as c:
        name = c.resolve_store(store)
        what = f"every key starting with {start!r}" if start else "every key"
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError(f"clear deletes {what} of store {name!r} and there is no terminal to ask. Pass --yes")
            click.confirm(f"Delete {what} of store {name!r} on {c.server.url}?", abort=True)
        counter = _Counter("Deleted", "keys")
        count = c.clear(name, start, counter)
        counter.finish()
    click.echo(f"Deleted {count} keys from {name}.")


@cli.command()
@_server_options
@click.option("--no-browser", is_flag=True, help="Only print the URL.")
def ui(home: Path | None, http_port: int | None, no_browser: bool) -> None:
    """Open the inspector (the state server's page at /ui/) in the default browser."""
    from devinit.errors import ApiError

    ticket: str | None = None
    older = False
    with _client(home, http_port) as c:
        c.stores()  # the server answers (and takes the token) before a browser is sent there
        url = c.server.ui_url
        if c.server.token and not no_browser:
            # Never the token itself in the URL: the browser's command line (xdg-open, open, the
            # browser) is visible to every local user in ps. A ticket works once, for 60 s; the
            # page trades it for the token and keeps that in the tab's sessionStorage.
            try:
                ticket = c.ticket()
            except ApiError as e:
                if e.http_status != 404:
                    raise
                older = True  # a server from before tickets: the page asks for the token
    click.echo(f"Inspector: {url}")
    if no_browser:
        return
    import webbrowser

    if older:
        click.echo("This server gives no tickets (an older devinit): enter the API token in the page.")
    if not webbrowser.open(url + (f"#ticket={ticket}" if ticket else "")):
        token = bool(ticket) or older
        click.echo("Could not start a browser here: open the URL above" + (" and enter the API token." if token else "."))


class _DaprRunCommand(click.Command):
    """``run`` takes ``dapr run``'s flags: those devinit has no use for are taken off the command
    line before parsing (devinit/runflags.py) and reported, instead of being usage errors."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from devinit.runflags import strip_ignored

        args, ctx.meta["devinit.ignored"] = strip_ignored(args)
        return super().parse_args(ctx, args)


@cli.command(cls=_DaprRunCommand, context_settings={"allow_interspersed_args": False})
@click.option(
    "--app-id", "-a", default=None, help="The app's id: keys are stored as '<app-id>||<key>' [default: the folder's name]."
)
@click.option(
    "--app-port",
    "-p",
    type=click.IntRange(-1, 65535),
    default=None,
    help="The port the app listens on (given to it as APP_PORT).",
)
@click.option(
    "--dapr-http-port", "-H", type=click.IntRange(-1, 65535), default=None, help="The server's HTTP port [default: a free port]."
)
@click.option(
    "--dapr-grpc-port", "-G", type=click.IntRange(-1, 65535), default=None, help="The server's gRPC port [default: a free port]."
)
@click.option(
    "--resources-path",
    multiple=True,
    help="Folder of component files; repeat it (or separate with commas) for several [default: <home>/components].",
)
@click.option("--components-path", "-d", multiple=True, help="The same as --resources-path (Dapr's older name).")
@click.option("--log-level", default="info", show_default=True, help="The server's log level: debug, info, warn or error.")
@click.option(
    "--run-file", "-f", default=None, help="Run the apps of a Multi-App Run template (a dapr.yaml, or a folder holding one)."
)
@_home_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(
    ctx: click.Context,
    app_id: str | None,
    app_port: int | None,
    dapr_http_port: int | None,
    dapr_grpc_port: int | None,
    resources_path: tuple[str, ...],
    components_path: tuple[str, ...],
    log_level: str,
    run_file: str | None,
    home: Path | None,
    command: tuple[str, ...],
) -> None:
    """Run an app beside its own state server, as 'dapr run' does: devinit run -a orders -- python app.py

    With -f, run every app of a Multi-App Run template (dapr run -f). Other 'dapr run' flags
    are accepted and ignored. Exit code: the app's (with -f: the first non-zero one).
    """
    from devinit import run as runner
    from devinit.printer import Printer

    printer = Printer(sys.stdout, sys.stderr)
    notes: list[str] = list(ctx.meta.get("devinit.ignored", []))
    if run_file is not None:
        given = [
            p.opts[0]
            for p in ctx.command.params
            if p.name not in ("run_file", "home")
            and ctx.get_parameter_source(p.name or "") == click.core.ParameterSource.COMMANDLINE
        ]
        notes += [f"{flag}: ignored with --run-file (set it in the run file)" for flag in given]
        opts = runner.options_from_file(run_file, home, notes)
    else:
        folders = [p for value in (*resources_path, *components_path) for p in value.split(",") if p.strip()]
        flags = runner.Flags(app_id, app_port, dapr_http_port, dapr_grpc_port, folders, log_level)
        opts = runner.options_from_flags(flags, list(command), home, notes)
    for note in notes:
        printer.note(note)
    sys.exit(runner.run(opts, printer))


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the fields of 'dapr list -o json').")
@click.option("--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table", help="As 'dapr list -o'.")
def list_runs(as_json: bool, output: str) -> None:
    """List the apps running under 'devinit run' (as 'dapr list')."""
    import json

    from devinit.render import render_list
    from devinit.runs import running_apps

    apps = running_apps()
    if as_json or output == "json":
        click.echo(json.dumps([a.to_json() for a in apps], indent=2))
    elif output == "yaml":
        import yaml

        click.echo(yaml.safe_dump([a.to_json() for a in apps], sort_keys=False), nl=False)
    else:
        click.echo(render_list(apps))


@cli.command()
@click.option("--app-id", "-a", default=None, help="Stop the app with this id (and its state server).")
@click.option("--run-file", "-f", default=None, help="Stop every app of this run file (a dapr.yaml, or its folder).")
@click.argument("app_ids", nargs=-1)
def stop(app_id: str | None, run_file: str | None, app_ids: tuple[str, ...]) -> None:
    """Stop apps started by 'devinit run': devinit stop --app-id ID, or devinit stop -f FILE_OR_DIR."""
    from devinit import runs
    from devinit.errors import UsageError

    ids = [*([app_id] if app_id else []), *app_ids]
    if not ids and run_file is None:
        raise UsageError("say what to stop: --app-id ID, or --run-file FILE_OR_DIR ('devinit list' shows what runs)")
    results = []
    if run_file is not None:
        from devinit.runfile import find

        path = find(run_file)
        if path is None:
            raise UsageError("--run-file -: a run read from stdin has no file to name; stop it with --app-id")
        results.append(runs.stop(run_file=path))
    results += [runs.stop(app_id=i) for i in ids]
    ok = True
    for r in results:
        for name in r.apps:
            click.echo(f"stopped: {name}")
        for name in r.still_running:
            click.echo(f"FAILED:  {name} is still running", err=True)
        ok = ok and r.ok
    sys.exit(0 if ok else 1)


def main() -> None:
    """Console entry point: the one place DevinitError becomes a clean message."""
    try:
        cli(standalone_mode=True)
    except DevinitError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
