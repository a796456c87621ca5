"""What differs per OS, tested as far as Linux allows: the event loop Windows gets, the "Try:"
lines per shell, the port probe (TIME_WAIT, refusals), secret files on Windows (the ACL
command), a file another program holds (os.replace retried), the Docker SDK's named-pipe
errors, and characters outside the BMP in the YAML devinit writes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from devinit import atomic, ports
from devinit.components import load_components, render_template
from devinit.docker_redis import Docker, Endpoint
from devinit.errors import DockerError, FileWriteError
from devinit.render import TRY_BODY, try_lines, try_save_argv
from devinit.server.serve import loop_factory
from support import DevinitServer, devinit_env, free_port, need, write_component

# --- the event loop ---------------------------------------------------------------------------


def test_windows_gets_a_selector_loop_posix_uvloop() -> None:
    import uvloop

    assert loop_factory("win32") is asyncio.SelectorEventLoop  # psycopg refuses the Proactor loop
    assert loop_factory("linux") is uvloop.new_event_loop
    assert loop_factory("darwin") is uvloop.new_event_loop


def test_the_server_runs_on_the_loop_windows_gets(tmp_path: Path, postgres_server) -> None:  # type: ignore[no-untyped-def]
    """The whole server (HTTP/1.1, gRPC, PostgreSQL through psycopg) on asyncio's selector loop,
    chosen by serve(platform="win32"), stopped by POST /v1.0/shutdown."""
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.postgresql", {"connectionString": postgres_server.conninfo})
    http, grpc = free_port(), free_port()
    code = (
        "import sys\nfrom pathlib import Path\nfrom devinit.server.serve import ServeOptions, serve\n"
        f"sys.exit(serve(ServeOptions(Path({str(folder)!r}), http_port={http}, grpc_port={grpc}, log_level='debug'), platform='win32'))"
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, env=devinit_env())
    try:
        base = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/v1.0/healthz", timeout=1).status_code == 204:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        key = f"sel-{os.getpid()}"
        assert httpx.post(base + "/v1.0/state/statestore", json=[{"key": key, "value": "ü"}], timeout=15).status_code == 204
        assert httpx.get(f"{base}/v1.0/state/statestore/{key}", timeout=15).json() == "ü"
        assert httpx.post(base + "/v1.0/shutdown", timeout=15).status_code == 204
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(encoding="utf-8")
    assert "event loop: _UnixSelectorEventLoop" in text  # the selector loop, not uvloop
    assert "stopping (POST /v1.0/shutdown)" in text


def test_shutdown_route_is_post_only_and_token_checked(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    srv = DevinitServer(folder, "--api-token", "tok-x")
    try:
        assert httpx.post(srv.url + "/v1.0/shutdown", timeout=15).status_code == 401
        r = httpx.get(srv.url + "/v1.0/shutdown", headers={"dapr-api-token": "tok-x"}, timeout=15)
        assert r.status_code == 405
        assert httpx.get(srv.url + "/v1.0/healthz", timeout=15).status_code == 204  # still up
        r = httpx.post(srv.url + "/v1.0/shutdown", headers={"dapr-api-token": "tok-x"}, timeout=15)
        assert r.status_code == 204 and r.content == b""
        assert srv.proc is not None and srv.proc.wait(timeout=30) == 0
    finally:
        srv.stop()


# --- the "Try:" lines -----------------------------------------------------------------------


def windows_argv(line: str) -> list[str]:
    """Split a command line as the Microsoft C runtime does (quotes, and \\" inside them)."""
    args, cur, quoted, have = [], [], False, False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and line[i + 1 : i + 2] == '"':
            cur.append('"')
            have = True
            i += 2
            continue
        if c == '"':
            quoted, have = not quoted, True
        elif c in " \t" and not quoted:
            if have:
                args.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(c)
            have = True
        i += 1
    if have:
        args.append("".join(cur))
    return args


def test_try_lines_per_shell_work_against_a_server(tmp_path: Path) -> None:
    need(shutil.which("curl") is not None, "curl is needed to run the Try: line")
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    srv = DevinitServer(folder)
    url = f"http://127.0.0.1:{srv.http_port}/v1.0/state/statestore"
    try:
        # POSIX: the printed line, run by a real shell
        (posix,) = try_lines(url, "linux")
        assert posix.startswith("Try: curl ") and "localhost" not in posix
        out = subprocess.run(["sh", "-c", posix.removeprefix("Try: ")], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout == '"world"', out
        # Windows: cmd's line, split as the C runtime splits it, is the same request (curl.exe
        # being curl), and it works; PowerShell's avoids native argument passing and '&&'
        ps, cmd = try_lines(url, "win32")
        assert ps.startswith("Try (PowerShell): Invoke-RestMethod ") and "&&" not in ps and "curl" not in ps
        assert f"-Body '{TRY_BODY}'" in ps  # a single-quoted PowerShell string takes the JSON as it is
        save, read = cmd.removeprefix("Try (cmd): ").split(" && ")
        assert save.startswith("curl.exe ") and '"[{\\"key\\":' in save  # double quotes, as cmd needs
        argv = windows_argv(save)
        assert argv == try_save_argv(url, "curl.exe")
        httpx.delete(url + "/hello", timeout=15)
        done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *argv[1:]], capture_output=True, text=True)
        assert done.stdout == "204"
        assert windows_argv(read) == ["curl.exe", url + "/hello"]
    finally:
        srv.stop()


# --- ports -----------------------------------------------------------------------------------


def test_probe_binds_as_the_server_does_so_time_wait_is_free() -> None:
    """A connection the server side closed first sits in TIME_WAIT on the port: a plain bind
    fails, the servers (SO_REUSEADDR, as asyncio sets it) bind, and so does the probe."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert ports.probe(port) is ports.PortState.IN_USE  # a listener holds it
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.close()  # the server side closes first: its side goes to TIME_WAIT
        client.recv(1)
        client.close()
    with socket.socket() as plain:
        with pytest.raises(OSError) as e:
            plain.bind(("127.0.0.1", port))
        assert e.value.errno == errno.EADDRINUSE
    assert ports.probe(port) is ports.PortState.FREE


def test_a_refused_bind_is_told_from_a_port_in_use() -> None:
    assert ports.classify(OSError(errno.EACCES, "Permission denied")) is ports.PortState.RESERVED
    assert ports.classify(OSError(errno.EADDRINUSE, "Address already in use")) is ports.PortState.IN_USE
    text = ports.refusal(50001, "--grpc-port", "win32")
    assert "WinError 10013" in text and "netsh int ipv4 show excludedportrange protocol=tcp" in text
    assert "--grpc-port" in text


def test_a_privileged_port_is_refused_not_in_use_for_a_normal_user() -> None:
    """A real EACCES: a process without privileges binding port 80 (forked, then setuid)."""
    need(os.geteuid() == 0, "needs root to drop to another user")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, probe, report
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, ports.probe(80).value.encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == ports.PortState.RESERVED.value


def test_grpc_server_on_a_refused_port_says_refused_not_in_use() -> None:
    """`devinit serve` itself (not only init's probe) tells a port the OS refuses from one in use:
    the gRPC front end binding port 80 without privileges (forked, then setuid nobody)."""
    need(os.geteuid() == 0, "needs root to drop to another user")
    import asyncio

    from devinit.errors import GrpcBindError
    from devinit.server.grpc_api import start_grpc_server
    from devinit.server.runtime import Runtime

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, try to serve gRPC on port 80, report the error
        try:
            os.setgid(65534)
            os.setuid(65534)

            async def attempt() -> str:
                try:
                    server = await start_grpc_server(Runtime({}, {}), "127.0.0.1", 80)
                except GrpcBindError as e:
                    return str(e)
                await server.stop(grace=0)
                return "listening"

            os.write(write, asyncio.run(attempt()).encode())
        finally:
            os._exit(0)
    os.close(write)
    message = os.read(read, 4000).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert "refuses port 80" in message and "in use" not in message, message


# --- secret files on Windows; a file held open ----------------------------------------------------


def test_windows_owner_only_acl_command() -> None:
    path = Path(r"C:\Users\Jürgen\AppData\Local\devinit\.setup.json.x.tmp")
    sid = "S-1-5-21-1004336348-1177238915-682003330-1001"
    assert atomic.owner_only_acl_command(path, sid) == ["icacls", str(path), "/inheritance:r", "/grant:r", f"*{sid}:(F)", "/q"]
    out = '"desktop-7f3k\\jürgen","S-1-5-21-1004336348-1177238915-682003330-1001"\r\n'
    assert atomic.parse_whoami_sid(out) == sid
    assert atomic.parse_whoami_sid("ERROR: access denied") is None


def test_windows_secret_write_warns_when_it_cannot_protect_the_file(tmp_path: Path) -> None:
    """Here the real code path meets Linux' whoami, which does not know /user: no SID, so the
    file is written and the caller gets a warning naming it (what README promises)."""
    atomic.current_user_sid.cache_clear()
    try:
        target = tmp_path / "setup.json"
        warnings = atomic.write_atomic(target, b"{}", 0o600, platform="win32")
        assert target.read_bytes() == b"{}"
        assert len(warnings) == 1 and str(target) in warnings[0] and "readable by you alone" in warnings[0]
        assert atomic.write_atomic(tmp_path / "pid", b"1", 0o644, platform="win32") == []  # not a secret
    finally:
        atomic.current_user_sid.cache_clear()


def immutable(path: Path, on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True, capture_output=True)


def can_make_immutable(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.write_text("x")
    ok = shutil.which("chattr") is not None and subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
    if ok:
        immutable(probe, False)
    return ok


def test_replace_of_a_held_file_is_retried_then_a_clear_error(tmp_path: Path) -> None:
    """Windows refuses to replace a file another program holds open (PermissionError); Linux
    cannot hold a file that way, but refuses to replace an immutable one with the same error."""
    need(can_make_immutable(tmp_path), "chattr +i is needed (ext4 and CAP_LINUX_IMMUTABLE)")
    target = tmp_path / "statestore.yaml"
    target.write_text("old")
    immutable(target, True)
    try:
        with pytest.raises(FileWriteError) as e:
            atomic.write_atomic(target, b"new")
        assert str(e.value).startswith(f"could not replace {target}: Operation not permitted. Another program may hold it open")
        assert "close it and run the command again" in str(e.value)
        assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["probe", "statestore.yaml"]
        # released while devinit retries (an editor closing the file): the write goes through
        threading.Timer(0.15, immutable, (target, False)).start()
        assert atomic.write_atomic(target, b"new") == []
        assert target.read_text() == "new"
    finally:
        immutable(target, False)


# --- the Docker SDK's named-pipe errors -----------------------------------------------------------

# pywintypes.error as pywin32 defines it (an Exception subclass of module "pywintypes", args
# (winerror, funcname, strerror)); pywin32 itself exists on Windows only.
PyWinError = type("error", (Exception,), {"__module__": "pywintypes"})


def test_named_pipe_errors_are_translated_at_the_boundary() -> None:
    docker = Docker(None, Endpoint("npipe:////./pipe/docker_engine", "platform default"))
    with pytest.raises(DockerError) as e:
        with docker._translate("listing devinit's containers"):
            raise PyWinError(2, "CreateFile", "The system cannot find the file specified.")
    assert str(e.value).startswith(
        "listing devinit's containers failed on the Docker engine at npipe:////./pipe/docker_engine: "
        "CreateFile: The system cannot find the file specified (Windows error 2). Check 'docker info'"
    )
    with pytest.raises(ZeroDivisionError):  # anything else is a bug: not translated
        with docker._translate("x"):
            raise ZeroDivisionError


# --- YAML written by devinit --------------------------------------------------------------------


def test_component_values_outside_the_bmp_round_trip(tmp_path: Path) -> None:
    db = str(tmp_path / "Jürgen 😀" / "statestore.db")
    password = 'p"w\\ä😀\u2028\x85'
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "statestore.yaml").write_text(render_template("statestore-sqlite", connectionString=db), encoding="utf-8")
    (folder / "redis.yaml").write_text(
        render_template("statestore-redis", redisHost="127.0.0.1:6379", redisPassword=password).replace(
            "name: statestore", "name: redis"
        ),
        encoding="utf-8",
    )
    loaded = load_components(folder)
    assert loaded.errors == []
    values = {s.name: s.metadata for s in loaded.specs}
    assert values["statestore"]["connectionString"] == db
    assert values["redis"]["redisPassword"] == password
    assert yaml.safe_load((folder / "statestore.yaml").read_text(encoding="utf-8"))["kind"] == "Component"
