"""``dapr run``'s command line, so that a ``dapr run`` line can be pasted after ``devinit``.

devinit keeps Dapr's names and short forms for what it uses (``--app-id/-a``,
``--app-port/-p``, ``--dapr-http-port/-H``, ``--dapr-grpc-port/-G``, ``--resources-path``
and ``--components-path/-d``, ``--log-level``, ``--run-file/-f``; the click command in cli.py
declares them). Every other flag of ``dapr run`` (dapr/cli cmd/run.go, and the root's
``--runtime-path`` and ``--log-as-json``) is taken off the command line before click sees it,
with its value, and reported in one line: accepted, not a usage error. Go's flag syntax is
understood: ``--flag value``, ``--flag=value``, ``-x value``, ``-xvalue``, ``-x=value``
(rewritten ``-xvalue`` for click, which would read ``=value``), and booleans as ``--flag``
or ``--flag=false``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    """One ``dapr run`` flag that devinit accepts and ignores."""

    name: str
    short: str | None
    takes_value: bool
    why: str


_NO_APP_CHANNEL = "devinit does not call the app (no service invocation, pub/sub or actors)"
_NO_RUNTIME = "devinit's state server has no such setting"

IGNORED: tuple[Flag, ...] = (
    Flag("config", "c", True, "devinit reads no Dapr Configuration (tracing, mTLS, features)"),
    Flag("app-protocol", "P", True, _NO_APP_CHANNEL),
    Flag("app-channel-address", None, True, _NO_APP_CHANNEL),
    Flag("app-max-concurrency", None, True, _NO_APP_CHANNEL),
    Flag("app-ssl", None, False, _NO_APP_CHANNEL),
    Flag("enable-app-health-check", None, False, _NO_APP_CHANNEL),
    Flag("app-health-check-path", None, True, _NO_APP_CHANNEL),
    Flag("app-health-probe-interval", None, True, _NO_APP_CHANNEL),
    Flag("app-health-probe-timeout", None, True, _NO_APP_CHANNEL),
    Flag("app-health-threshold", None, True, _NO_APP_CHANNEL),
    Flag("dapr-internal-grpc-port", "I", True, "devinit has no internal gRPC API (no service invocation)"),
    Flag("metrics-port", "M", True, "devinit serves no metrics"),
    Flag("enable-profiling", None, False, "devinit serves no profiling endpoint"),
    Flag("profile-port", None, True, "devinit serves no profiling endpoint"),
    Flag("enable-api-logging", None, False, "use --log-level debug to see more of the server"),
    Flag("placement-host-address", None, True, "devinit has no actors"),
    Flag("scheduler-host-address", None, True, "devinit has no scheduler (jobs, workflows)"),
    Flag("max-body-size", None, True, _NO_RUNTIME),
    Flag("read-buffer-size", None, True, _NO_RUNTIME),
    Flag("unix-domain-socket", "u", True, "devinit listens on TCP ports on 127.0.0.1"),
    Flag("dapr-listen-addresses", None, True, "devinit listens on 127.0.0.1 only"),
    Flag("runtime-path", None, True, "devinit runs no daprd"),
    Flag("log-as-json", None, False, _NO_RUNTIME),
    Flag("kubernetes", "k", False, "devinit runs apps on this machine only"),
)

#: flags the click command declares that take a value (their value is not a positional)
USED_WITH_VALUE = {
    "--app-id",
    "-a",
    "--app-port",
    "-p",
    "--dapr-http-port",
    "-H",
    "--dapr-grpc-port",
    "-G",
    "--resources-path",
    "--components-path",
    "-d",
    "--log-level",
    "--run-file",
    "-f",
    "--home",
}

_BY_LONG = {f"--{f.name}": f for f in IGNORED}
_BY_SHORT = {f"-{f.short}": f for f in IGNORED if f.short}


def strip_ignored(args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` without the ``dapr run`` flags devinit ignores, and one line about each.

    Only the options before the app's command are looked at: after ``--`` or the first
    argument that is not an option, everything belongs to the app.
    """
    kept: list[str] = []
    notes: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            kept.extend(args[i:])
            break
        if not arg.startswith("--") and len(arg) > 2 and arg[2] == "=":
            arg = arg[:2] + arg[3:]  # Go's -a=orders is -aorders (click would take "=orders")
        name, eq, inline = arg.partition("=")
        flag = _BY_LONG.get(name) if name.startswith("--") else None
        if flag is None and not arg.startswith("--") and len(arg) >= 2:
            flag = _BY_SHORT.get(arg[:2])
            if flag is not None and len(arg) > 2:  # -Pgrpc: the value is attached
                eq, inline = "=", arg[2:]
        if flag is None:
            kept.append(arg)
            if not eq and arg in USED_WITH_VALUE and i + 1 < len(args):
                kept.append(args[i + 1])
                i += 1
            i += 1
            continue
        if flag.takes_value and not eq:
            value = args[i + 1] if i + 1 < len(args) else ""
            i += 1
        else:
            value = inline if eq else ""
        shown = f"--{flag.name}" + (f" {value}" if value else "")
        notes.append(f"{shown}: ignored ({flag.why})")
        i += 1
    return kept, notes


#: dapr's --log-level values, as the server's levels
_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "error",
    "panic": "error",
}


def server_log_level(value: str) -> str:
    """The server's log level for a ``dapr run --log-level`` value (debug, info, warn, error,
    fatal, panic; ``warning`` too); ValueError for anything else."""
    level = _LEVELS.get(value.strip().lower())
    if level is None:
        raise ValueError(f"{value!r} is not a log level; use debug, info, warn or error")
    return level
