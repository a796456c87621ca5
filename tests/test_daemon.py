"""daemon: a real background `devinit serve`, its pid file, stale pid files, and the Windows
process logic with a simulated platform (the one fault this machine cannot produce).
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

import pytest

from devinit import daemon
from devinit.errors import DaemonError
from support import devinit_env, free_port, write_component


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEVINIT_DATA_DIR", str(tmp_path / "data"))
    # the server runs `python -m devinit` from the state folder: it must find this checkout
    monkeypatch.setenv("PYTHONPATH", devinit_env()["PYTHONPATH"])
    return tmp_path / "data"


def test_windows_start_is_detached_without_fork() -> None:
    kw = daemon.popen_kwargs("win32")
    assert kw == {"creationflags": daemon.DETACHED_PROCESS | daemon.CREATE_NEW_PROCESS_GROUP}
    assert kw["creationflags"] == 0x8 | 0x200
    assert daemon.popen_kwargs("linux") == {"start_new_session": True}


def test_windows_stop_terminates_without_posix_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sent: list[int] = []
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        sent.append(sig)
        real_kill(pid, sig)

    monkeypatch.setattr(daemon.os, "kill", kill)
    # Simulated Windows: the liveness check there is OpenProcess (ctypes.windll); stand in
    # with the POSIX check so the loop can run here. os.kill(SIGTERM) is TerminateProcess there.
    monkeypatch.setattr(daemon, "_win_pid_alive", lambda pid: proc.poll() is None)
    daemon._terminate(proc.pid, 10, platform="win32")
    assert proc.wait(timeout=10) is not None
    assert sent == [signal.SIGTERM]  # no SIGKILL, no other POSIX-only signal


def test_start_find_stop_a_real_server(data_dir: Path, tmp_path: Path) -> None:
    comps = tmp_path / "components"
    write_component(comps, "statestore", "state.in-memory")
    http, grpc = free_port(), free_port()
    rec = daemon.start("k1", comps, http, grpc)
    try:
        saved = json.loads(daemon.pid_file("k1").read_text())
        assert saved["pid"] == rec.pid and saved["http_port"] == http and saved["grpc_port"] == grpc
        assert saved["argv"][1:4] == ["-m", "devinit", "serve"] and saved["started_at"] > 0
        if hasattr(os, "getsid"):  # POSIX: its own session, detached from our terminal
            assert os.getsid(rec.pid) == rec.pid
        found = daemon.find("k1")
        assert found.running and found.healthy and not found.stale and found.uptime is not None
        assert Path(rec.log_file).exists()
    finally:
        stopped = daemon.stop("k1")
    assert stopped is not None and stopped.pid == rec.pid
    assert not daemon.pid_alive(rec.pid)
    assert not daemon.pid_file("k1").exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", http)) != 0
    assert daemon.stop("k1") is None  # nothing left: a no-op


def test_stale_pid_files_are_detected(data_dir: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base = {"http_port": free_port(), "grpc_port": free_port(), "started_at": time.time(), "log_file": "x", "components": "c"}
    daemon.paths.state_dir().mkdir(parents=True)
    # 1: the process is gone
    daemon.pid_file("dead").write_text(json.dumps({**base, "pid": dead.pid, "argv": ["python", "-m", "devinit", "serve"]}))
    # 2: the pid is alive but runs something else (reused): this very test process
    daemon.pid_file("reused").write_text(json.dumps({**base, "pid": os.getpid(), "argv": ["python", "-m", "devinit", "serve"]}))
    for key in ("dead", "reused"):
        found = daemon.find(key)
        assert found.stale and not found.running and not found.healthy
        assert daemon.stop(key) is None  # never signals a process that is not ours
        assert not daemon.pid_file(key).exists()


def test_busy_http_port_is_refused_before_starting(data_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DaemonError, match=f"HTTP port {port} is already in use.*--http-port"):
            daemon.start("k2", tmp_path, port, free_port())
    assert not daemon.pid_file("k2").exists()
