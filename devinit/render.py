"""Text the CLI prints for init / status / uninstall / list results (never a password)."""

from __future__ import annotations

import shlex
import sys

from devinit.docker_redis import PullProgress
from devinit.lifecycle import InitResult, StatusResult, UninstallResult
from devinit.runs import RunningApp, age


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def pull_line(p: PullProgress) -> str:
    """One line of pull progress: layers and bytes."""
    size = f"{_mb(p.bytes_done)}/{_mb(p.bytes_total)}" if p.bytes_total else "sizes pending"
    return f"Pulling {p.image}: {p.layers_done}/{p.layers_total} layers, {size}"


TRY_BODY = '[{"key":"hello","value":"world"}]'


def try_save_argv(url: str, curl: str = "curl") -> list[str]:
    """The arguments of the save the "Try:" line shows (the read is ``curl <url>/hello``)."""
    return [curl, "-X", "POST", url, "-H", "Content-Type: application/json", "-d", TRY_BODY]


def try_lines(url: str, platform: str | None = None) -> list[str]:
    """A save and a read of ``hello`` to paste into the user's shell, one line per shell.

    POSIX shells: curl with single quotes. Windows: cmd gets ``curl.exe`` (in PowerShell 5.1
    ``curl`` is Invoke-WebRequest) with double quotes, embedded ones written as the C runtime
    reads them; PowerShell gets Invoke-RestMethod, because how a native program receives
    embedded quotes differs between PowerShell 5.1 and 7.3+, and ``&&`` is a syntax error in 5.1.
    """
    if (platform or sys.platform) != "win32":
        return [f"Try: {shlex.join(try_save_argv(url))} && curl {url}/hello"]
    cmd = " ".join(_windows_quote(a) for a in try_save_argv(url, "curl.exe"))
    ps = f"Invoke-RestMethod -Method Post -Uri {url} -ContentType application/json -Body '{TRY_BODY}'; Invoke-RestMethod {url}/hello"
    return [f"Try (PowerShell): {ps}", f"Try (cmd): {cmd} && curl.exe {url}/hello"]


def _windows_quote(arg: str) -> str:
    """``arg`` as one argument of a Windows command line (C runtime rules; no backslashes in ``arg``)."""
    if not any(c in arg for c in ' "'):
        return arg
    return '"' + arg.replace('"', '\\"') + '"'


def render_init(r: InitResult, platform: str | None = None) -> str:
    """What init did, then where the API is and a request to try in the user's shell."""
    lines = list(r.notes)
    for s in r.steps:
        lines.append(f"  {s.what:<10} {s.action:<10} {s.detail}")
    lines.append("Everything is already up; nothing changed." if not r.changed else "devinit is up.")
    where = f"redis (container {r.container}, 127.0.0.1:{r.redis_port})" if r.store == "redis" else "sqlite (embedded)"
    lines += [
        f"  state API  {r.http_url}",
        f"  gRPC API   127.0.0.1:{r.grpc_port}",
        f"  inspector  http://127.0.0.1:{r.http_port}/ui/  (or: devinit ui)",
        f"  store      {where}",
        f"  component  {r.component_file}",
        *try_lines(r.http_url, platform),
    ]
    return "\n".join(lines)


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def render_status(r: StatusResult) -> str:
    """A readable table of status."""
    rows: list[tuple[str, str, str]] = []
    d = r.docker
    if d is not None:
        rows.append(("docker", f"engine {d.version}" if d.reachable else "unreachable", f"{d.endpoint} (from {d.source})"))
    c = r.container
    if c is not None:
        health = "PING ok" if c.healthy else f"not healthy: {c.error}"
        rows.append(("container", c.state, f"{c.name} {c.host_ip or '?'}:{c.port or '?'} {c.image}; {health}"))
    elif r.store == "redis":
        rows.append(("container", "missing", "-"))
    for comp in r.components:
        state = "valid" if comp.valid else "invalid"
        rows.append(
            (
                "component",
                state,
                f"{comp.name or '?'} ({comp.type or '?'}) {comp.file}" + ("" if comp.valid else f": {comp.error}"),
            )
        )
    s = r.server
    if s.running:
        state = "healthy" if s.healthy else "unhealthy"
        grpc = f"grpc {s.grpc_port}" + ("" if s.grpc_listening else " (not listening)")
        detail = f"pid {s.pid}, http {s.http_port}, {grpc}, up {_uptime(s.uptime_seconds)}, log {s.log_file}"
    else:
        state = "stopped" + (" (stale pid file)" if s.stale_pid_file else "")
        detail = f"log {s.log_file}"
    rows.append(("server", state, detail))
    for st in r.stores:
        rows.append(("store", st.status, f"{st.name} ({st.type or '?'})" + (f": {st.error}" if st.error else "")))
    for a in r.apps:
        rows.append(
            (
                "app",
                "running",
                f"{a.app_id} (devinit run, pid {a.cli_pid}): http {a.http_port}, grpc {a.grpc_port}, up {_uptime(a.age_seconds)}",
            )
        )
    width = max(len(b) for _, b, _ in rows)
    lines = [f"home: {r.home}   store: {r.store or 'not set up'}"]
    lines += [f"  {a:<10} {b:<{width}}  {c_}" for a, b, c_ in rows]
    lines.append("healthy" if r.healthy else "NOT healthy:")
    lines += [f"  - {p}" for p in r.problems]
    return "\n".join(lines)


def render_uninstall(r: UninstallResult) -> str:
    """Exactly what was removed, kept, and could not be removed."""
    if not (r.removed or r.kept or r.failed):
        return f"Nothing to uninstall: devinit has nothing set up for {r.home}."
    lines = []
    lines += [f"removed: {x}" for x in r.removed] or ["removed: nothing"]
    lines += [f"kept:    {x}" for x in r.kept]
    lines += [f"FAILED:  {x}" for x in r.failed]
    return "\n".join(lines)


def render_list(apps: list[RunningApp]) -> str:
    """The apps under ``devinit run``, as ``dapr list`` shows its table."""
    if not apps:
        return "No apps are running under 'devinit run'."
    head = (
        "APP ID",
        "HTTP PORT",
        "GRPC PORT",
        "APP PORT",
        "COMMAND",
        "AGE",
        "CREATED",
        "SERVER PID",
        "CLI PID",
        "APP PID",
        "RUN FILE",
    )
    rows = [head]
    for a in apps:
        command = a.command if len(a.command) <= 20 else a.command[:17] + "..."
        rows.append(
            (
                a.app_id,
                str(a.http_port),
                str(a.grpc_port),
                str(a.app_port or ""),
                command,
                age(a.age_seconds),
                a.created,
                str(a.server_pid),
                str(a.cli_pid),
                str(a.app_pid or ""),
                a.run_file or "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
