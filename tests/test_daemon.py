"""daemon: a real background `devinit serve`, its records, stale records, and what differs per OS.

Windows and macOS cannot run here; what they need is tested as far as Linux allows: the
interpreter and creation flags chosen for Windows (the real functions, given the platform),
a launcher between devinit and the server (what a venv's redirector is on Windows), a system
without /proc (macOS: /proc hidden), the ANSI code page (PYTHONIOENCODING=cp1252 in the
caller's environment), and the graceful stop through Dapr's shutdown route.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devinit import daemon, paths
from devinit.errors import DaemonError
from support import devinit_env, free_port, write_component


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEVINIT_DATA_DIR", str(tmp_path / "data"))
    # the server runs `python -m devinit` from the state folder: it must find this checkout
    monkeypatch.setenv("PYTHONPATH", devinit_env()["PYTHONPATH"])
    return tmp_path / "data"


@pytest.fixture
def comps(tmp_path: Path) -> Path:
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    return folder


PYTHON = sys.executable


def server_pids(http_port: int) -> list[int]:
    """Pids of Python processes running `devinit serve --http-port http_port` (from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == PYTHON.encode() and b"serve" in argv and str(http_port).encode() in argv:
            found.append(int(cmdline.parent.name))
    return found


# --- Windows: the interpreter and the flags -----------------------------------------------------


def test_windows_creation_flags_hide_the_console_and_keep_ctrl_c_away() -> None:
    kw = daemon.popen_kwargs("win32")
    # CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP (Win32 values); not DETACHED_PROCESS, under
    # which a venv redirector's child opens a console window of its own
    assert kw == {"creationflags": 0x08000000 | 0x00000200}
    assert not kw["creationflags"] & 0x00000008
    assert daemon.popen_kwargs("linux") == daemon.popen_kwargs("darwin") == {"start_new_session": True}


# pyvenv.cfg as each tool writes it (CPython's venv 3.11+, used by pipx; uv; virtualenv 20)
PYVENV_CFGS = {
    "venv": "home = {home}\ninclude-system-site-packages = false\nversion = 3.12.4\nexecutable = {exe}\ncommand = {exe} -m venv {venv}\n",
    "uv": "home = {home}\nimplementation = CPython\nuv = 0.4.18\nversion_info = 3.12.4\ninclude-system-site-packages = false\nprompt = app\n",
    "virtualenv": "home = {home}\nimplementation = CPython\nversion_info = 3.12.4.final.0\nvirtualenv = 20.26.3\n"
    "include-system-site-packages = false\nbase-prefix = {home}\nbase-exec-prefix = {home}\nbase-executable = {exe}\n",
}


@pytest.mark.parametrize("tool", sorted(PYVENV_CFGS))
@pytest.mark.parametrize("base_known", [True, False])
def test_windows_venv_runs_the_real_interpreter_in_the_venv(tmp_path: Path, tool: str, base_known: bool) -> None:
    """A venv's Scripts\\python.exe is a redirector: devinit starts the interpreter behind it,
    telling it the venv as the redirector itself does (__PYVENV_LAUNCHER__)."""
    home = tmp_path / "Python312"
    home.mkdir()
    real = home / "python.exe"
    real.write_bytes(b"MZ")
    venv = tmp_path / "venv"
    (venv / "Scripts").mkdir(parents=True)
    redirector = venv / "Scripts" / "python.exe"
    redirector.write_bytes(b"MZ")
    (venv / "pyvenv.cfg").write_text(PYVENV_CFGS[tool].format(home=home, exe=real, venv=venv))
    # sys._base_executable as CPython sets it, or (3.11, gh-98360) the redirector's own path
    base = str(real) if base_known else str(redirector)
    chosen = daemon.server_interpreter("win32", str(redirector), base, str(venv), str(home))
    assert chosen.executable == str(real)
    assert chosen.env == {"__PYVENV_LAUNCHER__": str(redirector), "VIRTUAL_ENV": str(venv)}
    env = daemon.child_env(chosen, {"PATH": "x", "PYTHONIOENCODING": "cp1252"})
    assert env["__PYVENV_LAUNCHER__"] == str(redirector) and env["PATH"] == "x"
    assert env["PYTHONUTF8"] == "1" and env["PYTHONIOENCODING"] == "utf-8"


def test_windows_without_venv_or_real_interpreter_keeps_sys_executable(tmp_path: Path) -> None:
    exe = str(tmp_path / "python.exe")
    # not in a venv: the interpreter itself
    assert daemon.server_interpreter("win32", exe, exe, str(tmp_path), str(tmp_path)) == daemon.Interpreter(exe, {})
    # in a venv whose real interpreter cannot be found: the redirector (the server's own pid
    # file still names the right process)
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = C:\\gone\n")
    redirector = str(venv / "Scripts" / "python.exe")
    assert daemon.server_interpreter("win32", redirector, redirector, str(venv), "C:\\gone").executable == redirector
    # POSIX: sys.executable always (a venv's bin/python is a symlink, not a launcher)
    assert daemon.server_interpreter("linux", "/v/bin/python", "/usr/bin/python3", "/v", "/usr").executable == "/v/bin/python"


def test_the_record_names_the_server_not_a_launcher_in_front_of_it(
    data_dir: Path, comps: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sys.executable is a launcher that runs the real interpreter as its child and waits (a
    Windows venv redirector does exactly this): the record must hold the server's pid, and
    stop must stop the server, not just the launcher."""
    launcher = tmp_path / "launcher.sh"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\necho "launcher: child exited $?"\n')
    launcher.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(launcher))
    http = free_port()
    rec = daemon.start("k-launch", comps, http, free_port())
    try:
        (server_pid,) = server_pids(http)
        (launcher_pid,) = [pid for pid, p in daemon._children.items() if p.args[0] == str(launcher)]
        assert rec.pid == server_pid != launcher_pid
        assert int(paths.server_pid_file("k-launch").read_text()) == server_pid
        assert daemon.find("k-launch").running
    finally:
        stopped = daemon.stop("k-launch")
    assert stopped is not None and server_pids(http) == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", http)) != 0
    assert not paths.server_pid_file("k-launch").exists()  # the server removed its own


# --- a real server --------------------------------------------------------------------------


def test_start_find_stop_a_real_server(data_dir: Path, comps: Path) -> None:
    http, grpc = free_port(), free_port()
    rec = daemon.start("k1", comps, http, grpc)
    try:
        saved = json.loads(paths.server_record("k1").read_text())
        assert saved["pid"] == rec.pid and saved["http_port"] == http and saved["grpc_port"] == grpc
        assert saved["argv"][1:4] == ["-m", "devinit", "serve"] and saved["started_at"] > 0
        assert saved["process_start"].startswith("ticks:")
        assert os.getsid(rec.pid) == rec.pid  # POSIX: its own session, detached from our terminal
        found = daemon.find("k1")
        assert found.running and found.healthy and not found.stale and found.uptime is not None
        assert Path(rec.log_file).exists()
    finally:
        stopped = daemon.stop("k1")
    assert stopped is not None and stopped.pid == rec.pid
    assert not daemon.pid_alive(rec.pid)
    assert not paths.server_record("k1").exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", http)) != 0
    assert daemon.stop("k1") is None  # nothing left: a no-op


def test_stop_goes_through_the_shutdown_route_first(data_dir: Path, comps: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no SIGTERM (os.kill is TerminateProcess): stop asks the server to shut down
    over HTTP, as daprd's POST /v1.0/shutdown, with the API token; no signal is sent."""
    monkeypatch.setenv("DAPR_API_TOKEN", "tok-stop")  # the server inherits it; stop sends it
    http = free_port()
    rec = daemon.start("k-shut", comps, http, free_port())
    proc = daemon._children[rec.pid]  # kept by start (and reaped through it)
    r = httpx.post(f"http://127.0.0.1:{http}/v1.0/shutdown", timeout=15, trust_env=False)
    assert r.status_code == 401  # token-checked, as daprd
    assert daemon.find("k-shut").healthy
    signals: list[int] = []
    real_kill = os.kill
    monkeypatch.setattr(daemon.os, "kill", lambda pid, sig: signals.append(sig) or real_kill(pid, sig))
    assert daemon.stop("k-shut") is not None
    assert [s for s in signals if s != 0] == []  # only liveness probes (signal 0), no SIGTERM/SIGKILL
    assert proc.wait(timeout=15) == 0
    log = Path(rec.log_file).read_text(encoding="utf-8")
    assert "stopping (POST /v1.0/shutdown)" in log and "stopped; stores closed" in log


def test_stale_records_are_detected(data_dir: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base = {"http_port": free_port(), "grpc_port": free_port(), "started_at": time.time(), "log_file": "x", "components": "c"}
    paths.state_dir().mkdir(parents=True)
    argv = ["python", "-m", "devinit", "serve"]
    # 1: the process is gone
    paths.server_record("dead").write_text(json.dumps({**base, "pid": dead.pid, "argv": argv}))
    # 2: the pid is alive but runs something else (reused): this very test process, by its
    # command line (a record of an older devinit) and by its start time
    paths.server_record("reused").write_text(json.dumps({**base, "pid": os.getpid(), "argv": argv}))
    paths.server_record("reused2").write_text(json.dumps({**base, "pid": os.getpid(), "argv": argv, "process_start": "ticks:1"}))
    for key in ("dead", "reused", "reused2"):
        found = daemon.find(key)
        assert found.stale and not found.running and not found.healthy
        assert daemon.stop(key) is None  # never signals a process that is not ours
        assert not paths.server_record(key).exists()


def test_busy_http_port_is_refused_before_starting(data_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DaemonError, match=f"HTTP port {port} is already in use.*--http-port"):
            daemon.start("k2", tmp_path, port, free_port())
    assert not paths.server_record("k2").exists()


def test_restart_on_the_same_ports_while_a_connection_is_in_time_wait(data_dir: Path, comps: Path) -> None:
    """A client was connected when the server stopped: the server closed first, so its side of
    the connection sits in TIME_WAIT on the port. The new server binds with SO_REUSEADDR (as
    asyncio does), so the probe before it must not call the port busy."""
    http, grpc = free_port(), free_port()
    daemon.start("k-tw", comps, http, grpc)
    client = httpx.Client(base_url=f"http://127.0.0.1:{http}", trust_env=False)
    assert client.get("/v1.0/healthz").status_code == 204  # a keep-alive connection stays open
    try:
        daemon.stop("k-tw")
    finally:
        client.close()
    with socket.socket() as plain:  # the state the issue met: a bind without SO_REUSEADDR fails
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", http))
    rec = daemon.start("k-tw", comps, http, grpc)
    try:
        assert daemon.find("k-tw").healthy and rec.http_port == http
    finally:
        daemon.stop("k-tw")


# --- UTF-8 log -------------------------------------------------------------------------------


def test_the_log_is_utf8_whatever_the_callers_encoding(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows writes stdio in the ANSI code page unless told otherwise; cp1252 in the caller's
    environment does the same here. The log must still read back exactly."""
    monkeypatch.setenv("PYTHONIOENCODING", "cp1252")
    folder = tmp_path / "Jürgen 😀 components"
    write_component(folder, "statestore", "state.in-memory")
    rec = daemon.start("k-utf8", folder, free_port(), free_port())
    try:
        text = daemon.tail(Path(rec.log_file), 50)
        assert f"components from {folder};" in text, text
        assert "\ufffd" not in text and "\\U0001f600" not in text
    finally:
        daemon.stop("k-utf8")


# --- macOS: no /proc ----------------------------------------------------------------------------


def test_without_proc_children_are_reaped_and_servers_told_by_start_time(
    data_dir: Path, comps: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "PROC", tmp_path / "no-proc")  # macOS: no /proc at all
    http = free_port()
    rec = daemon.start("k-mac", comps, http, free_port())
    try:
        assert rec.process_start is not None and rec.process_start.startswith("lstart:")  # from ps
        # a live server that does not answer (stopped, or slower than any health check) is
        # still ours: told by its start time, not by whether it answers in time
        os.kill(rec.pid, signal.SIGSTOP)
        try:
            found = daemon.find("k-mac")
            assert found.running and not found.stale and not found.healthy
        finally:
            os.kill(rec.pid, signal.SIGCONT)
        # killed, not yet reaped: our own child is reaped by the check, not taken for alive
        os.kill(rec.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10  # a bound, not a timing: unreaped, it stays "alive" forever
        while daemon.pid_alive(rec.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not daemon.pid_alive(rec.pid)
        assert not Path(f"/proc/{rec.pid}").exists()  # reaped (this test may look at /proc)
        assert daemon.stop("k-mac") is None  # no "did not stop" after waiting for a zombie
    finally:
        with_kill(rec.pid)


def test_without_proc_a_zombie_that_is_not_ours_counts_as_exited(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\npid = os.fork()\nif pid == 0: os._exit(0)\nprint(pid, flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie}/stat").read_text().rpartition(")")[2].split()[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not daemon.pid_alive(zombie, proc=tmp_path / "no-proc")  # ps says Z
        assert not daemon.pid_alive(zombie)  # /proc says Z
        assert daemon.pid_alive(parent.pid, proc=tmp_path / "no-proc")
    finally:
        parent.kill()
        parent.wait()


def with_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS bounds a process's memory on Linux only")
def test_the_log_tail_reads_the_end_of_a_log_of_any_size(tmp_path: Path) -> None:
    """The background server's log is appended to by every start and never cut: the lines an
    error shows come from its end, read within a bound. A real 8 GiB (sparse) log, read by a
    process allowed 1 GiB of memory: reading it whole fails there."""
    log = tmp_path / "server.log"
    with open(log, "wb") as f:
        f.truncate(8 * 1024**3)
        f.seek(0, os.SEEK_END)
        f.write("".join(f"line {i} J\u00fcrgen\n" for i in range(30)).encode())
    code = (
        "import resource, sys\n"
        "from devinit import daemon\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))\n"
        "print(daemon.tail(__import__('pathlib').Path(sys.argv[1])))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(log)], env=devinit_env(), capture_output=True, timeout=120, encoding="utf-8"
    )
    log.unlink()
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [f"line {i} J\u00fcrgen" for i in range(15, 30)]
