"""Helpers for the `devinit run` / `list` / `stop` tests: the CLI as a real subprocess in a
private devinit home and state folder, its output in files, and process checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import ROOT, devinit_env

APPS = ROOT / "tests" / "apps"
PROBE = APPS / "probe.py"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "the condition") -> Any:
    """Poll ``check`` until it returns something true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


class Running:
    """A `devinit run` started in the background; stdout and stderr go to files."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, out_dir: Path, **popen: Any) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(out_dir.glob("out-*.txt")))
        self.out_path = out_dir / f"out-{n}.txt"
        self.err_path = out_dir / f"err-{n}.txt"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err, **popen)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def both(self) -> str:
        return f"--- stdout:\n{self.out()}\n--- stderr:\n{self.err()}"

    def wait_for(self, text: str, timeout: float = 60.0, count: int = 1) -> None:
        """Until ``text`` appears ``count`` times in stdout or stderr (AssertionError with both otherwise)."""
        try:
            wait_until(lambda: (self.out() + self.err()).count(text) >= count or self.proc.poll() is not None, timeout)
        except AssertionError:
            raise AssertionError(f"{text!r} not seen within {timeout}s:\n{self.both()}") from None
        assert (self.out() + self.err()).count(text) >= count, f"exited ({self.proc.returncode}) before {text!r}:\n{self.both()}"

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"devinit run did not end within {timeout}s:\n{self.both()}") from None

    def kill_all(self) -> None:
        """Clean-up whatever happened: this run and what its records name."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class RunHome:
    """A private devinit home (``DEVINIT_HOME``) and state folder (``DEVINIT_DATA_DIR``)."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.home = root / "dapr-home"
        self.data = root / "devinit-data"
        self.env = devinit_env(
            {"DEVINIT_HOME": str(self.home), "DEVINIT_DATA_DIR": str(self.data), "NO_COLOR": "1", **(env or {})}
        )
        for name in ("DAPR_API_TOKEN", "DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT", "FORCE_COLOR"):
            if not env or name not in env:
                self.env.pop(name, None)
        self.running: list[Running] = []

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "devinit", *args]

    def cli(
        self, *args: str, cwd: Path | None = None, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``python -m devinit <args>``, to its end."""
        return subprocess.run(
            self.argv(*args),
            env={**self.env, **(env or {})},
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, **popen: Any) -> Running:
        """``python -m devinit <args>`` in the background."""
        r = Running(self.argv(*args), {**self.env, **(env or {})}, cwd or self.root, self.root / "output", **popen)
        self.running.append(r)
        return r

    def listed(self) -> list[dict[str, Any]]:
        """``devinit list --json``."""
        out = self.cli("list", "--json")
        assert out.returncode == 0, out.stderr
        result: list[dict[str, Any]] = json.loads(out.stdout)
        return result

    def records(self) -> list[Path]:
        return sorted((self.data / "state" / "runs").glob("run-*.json"))

    def cleanup(self) -> None:
        """Kill what a failed test left: the runs, and the servers and apps their records name."""
        pids: list[int] = []
        for path in self.records():
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            pids += [a["server_pid"] for a in rec["apps"]] + [a["app_pid"] for a in rec["apps"] if a.get("app_pid")]
        for r in self.running:
            r.kill_all()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def redis_hget(port: int, key: str, field: str = "data", password: str | None = None) -> str:
    """``redis-cli HGET`` as a person would look at what a sidecar wrote."""
    auth = ["-a", password, "--no-auth-warning"] if password else []
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *auth, "--raw", "HGET", key, field], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.rstrip("\n")
