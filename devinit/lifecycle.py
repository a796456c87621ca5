"""init / status / uninstall: the one-command setup, as functions returning results.

Nothing here prints; ``cli.py`` renders the results. Everything ``init`` sets up for a home
folder is keyed by that folder (``home_key``): the container and volume labels, and devinit's
own files in platformdirs' folders:

- ``state_dir()/setup-<key>.json`` (0600): the store chosen, the Redis image/port/password,
  and the sha256 of the component file devinit wrote (to tell a file the user changed);
- ``state_dir()/server-<key>.json`` and ``log_dir()/server-<key>.log``: the background server;
- ``data_dir()/statestore-<key>.db``: the SQLite database when there is no Docker.

``init`` is idempotent, and when one of its steps fails it undoes what that run created and
says what was left in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devinit import daemon, paths
from devinit.atomic import write_atomic
from devinit.docker_redis import (
    DEFAULT_IMAGE,
    Docker,
    Endpoint,
    PullProgress,
    RedisSpec,
    choose_port,
    home_key,
    ping,
    port_is_free,
    resolve_endpoint,
)
from devinit.errors import DevinitError, DockerError, UsageError

STORES = ("redis", "sqlite")
COMPONENT = "statestore"
DEFAULT_HTTP_PORT = 3500
DEFAULT_GRPC_PORT = 50001


# --- devinit's record of a setup --------------------------------------------------------------


def setup_file(key: str) -> Path:
    """Where devinit remembers what init set up for the home folder named by ``key``."""
    return paths.state_dir() / f"setup-{key}.json"


def sqlite_db(key: str) -> Path:
    """The embedded SQLite database for the home folder named by ``key``."""
    return paths.data_dir() / f"statestore-{key}.db"


def _read_setup(key: str) -> dict[str, Any]:
    try:
        data = json.loads(setup_file(key).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_setup(key: str, data: dict[str, Any]) -> None:
    # 0600: it holds the Redis password.
    write_atomic(setup_file(key), json.dumps(data, indent=2, sort_keys=True).encode())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- init -----------------------------------------------------------------------------------


@dataclass
class InitOptions:
    """What ``devinit init`` was asked for; None means "as before, else the default"."""

    home: Path | None = None
    store: str | None = None  # "redis", "sqlite", or None: Redis when Docker answers
    image: str | None = None
    redis_port: int | None = None
    http_port: int | None = None
    grpc_port: int | None = None
    force: bool = False
    timeout: float = 60.0


@dataclass
class Step:
    """One thing init looked at, and what it did about it."""

    what: str  # "image", "volume", "container", "component", "server"
    action: str  # "unchanged", "created", "started", "recreated", "restarted", "written", "updated", "kept", "pulled"
    detail: str

    @property
    def changed(self) -> bool:
        return self.action not in ("unchanged", "kept")


@dataclass
class InitResult:
    """What ``init`` left running, and the steps it took."""

    home: Path
    store: str
    http_port: int
    grpc_port: int
    component_file: Path
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    redis_port: int | None = None
    container: str | None = None

    @property
    def changed(self) -> bool:
        """False when everything was already up as asked."""
        return any(s.changed for s in self.steps)

    @property
    def http_url(self) -> str:
        return f"http://localhost:{self.http_port}/v1.0/state/{COMPONENT}"


class _Undo:
    """What this run created, to take back (newest first) if a later step fails."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Callable[[], object]]] = []
        self.left: list[str] = []  # things that existed before this run and stay

    def add(self, what: str, action: Callable[[], object]) -> None:
        self.actions.append((what, action))

    def run(self) -> str:
        undone, failed = [], []
        for what, action in reversed(self.actions):
            try:
                action()
                undone.append(what)
            except Exception as e:  # undo is best effort: report what could not be undone
                failed.append(f"{what} ({e})")
        parts = []
        if undone:
            parts.append("Undone: " + "; ".join(undone) + ".")
        if failed:
            parts.append("Could not undo: " + "; ".join(failed) + ".")
        if self.left:
            parts.append("Left as it was before: " + "; ".join(self.left) + ".")
        if not undone and not failed:
            parts.append("Nothing was left behind by this run.")
        return " ".join(parts)


def init(opts: InitOptions, on_pull: Callable[[PullProgress], None] | None = None) -> InitResult:
    """Set up (or repair) the store, the component file and the background server.

    Idempotent: a second run changes nothing. On failure, what this run created is undone and
    the raised DevinitError's message says so.
    """
    if opts.store is not None and opts.store not in STORES:
        raise UsageError(f"--store {opts.store!r} is not a store devinit sets up. Use --store redis or --store sqlite")
    home = paths.home(opts.home)
    key = home_key(home)
    setup = _read_setup(key)
    undo = _Undo()
    before = setup_file(key).read_bytes() if setup_file(key).exists() else None
    try:
        return _init(opts, home, key, setup, undo, on_pull)
    except BaseException as e:
        summary = undo.run()
        # Put back devinit's record as it was: what it describes is what is left.
        if before is None:
            setup_file(key).unlink(missing_ok=True)
        else:
            write_atomic(setup_file(key), before)
        if isinstance(e, DevinitError) and e.args:
            e.args = (f"{e.args[0]}\n{summary}", *e.args[1:])
        raise


def _init(
    opts: InitOptions,
    home: Path,
    key: str,
    setup: dict[str, Any],
    undo: _Undo,
    on_pull: Callable[[PullProgress], None] | None,
) -> InitResult:
    store = opts.store or setup.get("store")
    docker: Docker | None = None
    notes: list[str] = []
    if store in (None, "redis"):
        try:
            docker = Docker.connect()
        except DockerError as e:
            if opts.store == "redis":
                raise
            if store == "redis":  # set up with Redis before: do not switch stores silently
                raise DockerError(
                    f"{e.args[0].rstrip('.')}. devinit was set up with Redis in Docker for {home}; "
                    "start Docker, or run 'devinit init --store sqlite' to switch to the embedded SQLite store"
                ) from None
            notes.append(f"Docker is not reachable at {_endpoint_text()}: using the embedded SQLite store instead.")
            store = "sqlite"
        else:
            store = "redis"
    elif opts.store is None:
        notes.append("Using the embedded SQLite store, as set up before ('devinit init --store redis' switches to Redis).")

    http_port = opts.http_port or setup.get("http_port") or DEFAULT_HTTP_PORT
    grpc_port = opts.grpc_port or setup.get("grpc_port") or DEFAULT_GRPC_PORT
    comp_dir = paths.components_dir(home)
    result = InitResult(home, store, http_port, grpc_port, comp_dir / f"{COMPONENT}.yaml", notes=notes)
    new_setup: dict[str, Any] = {**setup, "home": str(home), "store": store, "http_port": http_port, "grpc_port": grpc_port}

    if store == "redis":
        assert docker is not None
        values = _init_redis(docker, opts, home, setup, new_setup, result, undo, on_pull)
        template = "statestore-redis"
    else:
        db = sqlite_db(key)
        db.parent.mkdir(parents=True, exist_ok=True)
        new_setup["sqlite"] = {"db": str(db)}
        values = {"connectionString": str(db)}
        template = "statestore-sqlite"

    component_changed = _write_component(result, template, values, setup, new_setup, opts.force, undo)
    _write_setup(key, new_setup)
    _init_server(key, comp_dir, http_port, grpc_port, component_changed, result, undo, opts.timeout)
    return result


def _endpoint_text() -> str:
    try:
        return resolve_endpoint().describe()
    except DevinitError as e:
        return str(e)


def _init_redis(
    docker: Docker,
    opts: InitOptions,
    home: Path,
    setup: dict[str, Any],
    new_setup: dict[str, Any],
    result: InitResult,
    undo: _Undo,
    on_pull: Callable[[PullProgress], None] | None,
) -> dict[str, str]:
    recorded = setup.get("redis") or {}
    image = opts.image or recorded.get("image") or DEFAULT_IMAGE
    existing = docker.find_container(home)
    # Keep the password Redis already has (the container's, else the one on record) so that
    # the component file and any app configured with it stay valid.
    password = (existing.password if existing else None) or recorded.get("password") or secrets.token_urlsafe(24)
    if opts.redis_port:
        port = opts.redis_port
    elif existing and existing.host_port:
        port = existing.host_port
    elif recorded.get("port") and port_is_free(int(recorded["port"])):
        port = int(recorded["port"])
    else:
        port = choose_port()
    spec = RedisSpec(home, image, port, password)
    new_setup["redis"] = {
        "image": image,
        "port": port,
        "password": password,
        "container": spec.container_name,
        "volume": spec.volume_name,
    }
    result.redis_port = port
    result.container = spec.container_name

    if existing and existing.config_hash != spec.config_hash():
        docker.remove_container(existing.id)
        # The old container cannot be put back; its data lives on in the volume.
        undo.left.append(f"container {existing.name} was removed to be recreated (its data volume stays)")
        result.steps.append(Step("container", "recreated", f"{spec.container_name}: made from other settings before"))
        existing = None
        recreated = True
    else:
        recreated = False

    if existing is None:
        if docker.image_present(image):
            result.steps.append(Step("image", "unchanged", f"{image} is present"))
        else:
            docker.pull(image, on_pull)
            # A pulled image is shared with anything else on the engine: not undone.
            result.steps.append(Step("image", "pulled", image))
        if docker.ensure_volume(spec):
            undo.add(f"removed volume {spec.volume_name}", lambda: docker.remove_volume(spec.volume_name))
            result.steps.append(Step("volume", "created", spec.volume_name))
        else:
            undo.left.append(f"volume {spec.volume_name}")
            result.steps.append(Step("volume", "unchanged", f"{spec.volume_name} (data kept)"))
        info = docker.create_container(spec)
        undo.add(f"removed container {spec.container_name}", lambda: docker.remove_container(info.id))
        if not recreated:
            result.steps.append(Step("container", "created", f"{spec.container_name} on 127.0.0.1:{port}"))
    elif existing.state != "running":
        docker.start_container(existing.id)
        info = existing
        result.steps.append(Step("container", "started", f"{existing.name} (was {existing.state})"))
    else:
        info = existing
        result.steps.append(Step("container", "unchanged", f"{existing.name} runs on 127.0.0.1:{port}"))
    docker.wait_ready(info, port, password, timeout=opts.timeout)
    return {"redisHost": f"127.0.0.1:{port}", "redisPassword": password}


def _write_component(
    result: InitResult,
    template: str,
    values: dict[str, str],
    setup: dict[str, Any],
    new_setup: dict[str, Any],
    force: bool,
    undo: _Undo,
) -> bool:
    """Write the component file unless the user owns it; True when its content changed."""
    from devinit.components import render_template

    path = result.component_file
    desired = render_template(template, **values).encode()
    written_sha = (setup.get("component") or {}).get("sha256")
    new_setup["component"] = {"path": str(path), "sha256": written_sha}
    try:
        current: bytes | None = path.read_bytes()
    except FileNotFoundError:
        current = None
    if current is not None and current == desired:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # it holds a password
        new_setup["component"]["sha256"] = _sha256(desired)
        result.steps.append(Step("component", "unchanged", str(path)))
        return False
    if current is not None and not force and _sha256(current) != written_sha:
        why = "was changed since devinit wrote it" if written_sha else "was not written by devinit"
        result.steps.append(Step("component", "kept", f"{path} {why}; 'devinit init --force' overwrites it"))
        result.notes.append(f"Kept {path}: it {why}. Use --force to overwrite it with devinit's.")
        return False
    write_atomic(path, desired, 0o600)
    new_setup["component"]["sha256"] = _sha256(desired)
    if current is None:
        undo.add(f"removed {path}", lambda: path.unlink(missing_ok=True))
        result.steps.append(Step("component", "written", str(path)))
    else:
        undo.add(f"restored {path}", lambda: write_atomic(path, current, 0o600))
        result.steps.append(Step("component", "updated" if not force else "overwritten", str(path)))
    return True


def _init_server(
    key: str,
    comp_dir: Path,
    http_port: int,
    grpc_port: int,
    component_changed: bool,
    result: InitResult,
    undo: _Undo,
    timeout: float,
) -> None:
    found = daemon.find(key)
    rec = found.record
    same = rec is not None and (rec.http_port, rec.grpc_port, rec.components) == (http_port, grpc_port, str(comp_dir))
    if found.running and found.healthy and same and not component_changed and rec is not None:
        result.steps.append(Step("server", "unchanged", f"pid {rec.pid} on port {http_port}"))
        return
    action = "started"
    if found.running and rec is not None:
        daemon.stop(key)
        action = "restarted"
        why = "new settings" if not same else ("the component changed" if component_changed else "it was not healthy")
        undo.left.append(f"the previous server (pid {rec.pid}) was stopped")
    elif found.stale:
        daemon.stop(key)  # removes the stale pid file
        action, why = "restarted", "the previous one had stopped"
    else:
        why = ""
    new = daemon.start(key, comp_dir, http_port, grpc_port)
    undo.add(f"stopped the server (pid {new.pid})", lambda: daemon.stop(key))
    result.steps.append(Step("server", action, f"pid {new.pid} on port {http_port}" + (f" ({why})" if why else "")))


# --- status ---------------------------------------------------------------------------------


@dataclass
class DockerStatus:
    endpoint: str
    source: str
    reachable: bool
    version: str | None = None
    error: str | None = None


@dataclass
class ContainerStatus:
    name: str
    id: str
    state: str
    healthy: bool
    port: int | None
    host_ip: str | None
    image: str
    error: str | None = None


@dataclass
class ComponentStatus:
    name: str | None
    type: str | None
    file: str
    valid: bool
    error: str | None = None


@dataclass
class StoreStatus:
    """A state store as the running server sees it (its periodic ping)."""

    name: str
    type: str | None
    status: str  # "up", "down" or "unknown" (not pinged yet)
    error: str | None = None


@dataclass
class ServerInfo:
    running: bool
    healthy: bool
    pid: int | None = None
    http_port: int | None = None
    grpc_port: int | None = None
    grpc_listening: bool | None = None  # the gRPC port accepts connections (None: not running)
    uptime_seconds: float | None = None
    log_file: str | None = None
    pid_file: str | None = None
    stale_pid_file: bool = False


@dataclass
class StatusResult:
    """Everything ``status`` found; ``healthy`` when all init set up is well."""

    home: str
    store: str | None
    docker: DockerStatus | None
    container: ContainerStatus | None
    components: list[ComponentStatus]
    server: ServerInfo
    problems: list[str]
    stores: list[StoreStatus] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.store is not None and not self.problems

    def to_json(self) -> dict[str, Any]:
        """The ``status --json`` document (shape documented in README.md)."""
        return {"healthy": self.healthy, **asdict(self)}


def status(home_opt: Path | None = None) -> StatusResult:
    """Look at everything init sets up for the home folder, and say what is wrong."""
    home = paths.home(home_opt)
    key = home_key(home)
    setup = _read_setup(key)
    store = setup.get("store")
    problems: list[str] = []
    if not store:
        problems.append(f"devinit init has not been run for {home}: run 'devinit init'")

    docker_status: DockerStatus | None = None
    container: ContainerStatus | None = None
    try:
        endpoint: Endpoint | None = resolve_endpoint()
    except DockerError as e:
        endpoint = None
        docker_status = DockerStatus("?", "?", False, error=str(e))
    if endpoint is not None:
        docker_status = DockerStatus(endpoint.url, endpoint.source, False)
        try:
            docker = Docker.connect(endpoint, timeout=10)
            docker_status.reachable = True
            docker_status.version = docker.version()
            info = docker.find_container(home)
        except DockerError as e:
            docker_status.error = str(e)
            info = None
            docker = None
        if info is not None:
            password = info.password or (setup.get("redis") or {}).get("password")
            why = ping(info.host_port, password) if info.state == "running" and info.host_port else f"container is {info.state}"
            container = ContainerStatus(
                info.name, info.id[:12], info.state, why is None, info.host_port, info.host_ip, info.image, why
            )
    if store == "redis":
        if docker_status is None or not docker_status.reachable:
            problems.append(f"Docker is not reachable ({docker_status.error if docker_status else '?'})")
        elif container is None:
            problems.append("the Redis container is missing: run 'devinit init'")
        elif not container.healthy:
            problems.append(f"the Redis container {container.name} is not healthy ({container.error}): run 'devinit init'")

    components: list[ComponentStatus] = []
    from devinit.components import load_components

    loaded = load_components(paths.components_dir(home))
    for spec in loaded.specs:
        components.append(ComponentStatus(spec.name, spec.type, str(spec.path), True))
    for err in loaded.errors:
        components.append(
            ComponentStatus(
                err.component,
                None,
                err.path,
                False,
                err.reason if err.field == "(file)" else f"{err.field}: {err.reason}",
            )
        )
    if store and not any(c.valid and c.name == COMPONENT for c in components):
        bad = loaded.error_for(COMPONENT)
        problems.append(
            f"component {COMPONENT!r} is not loaded ({bad})" if bad else f"component {COMPONENT!r} is missing: run 'devinit init'"
        )

    found = daemon.find(key)
    rec = found.record
    server = ServerInfo(
        running=found.running,
        healthy=found.healthy,
        pid=rec.pid if rec else None,
        http_port=rec.http_port if rec else None,
        grpc_port=rec.grpc_port if rec else None,
        uptime_seconds=round(found.uptime, 1) if found.uptime is not None else None,
        log_file=rec.log_file if rec else str(daemon.log_file(key)),
        pid_file=str(found.pid_file),
        stale_pid_file=found.stale,
    )
    if store:
        if found.stale:
            problems.append(f"the state server is not running (stale pid file {found.pid_file}): run 'devinit init'")
        elif not found.running:
            problems.append("the state server is not running: run 'devinit init'")
        elif not found.healthy:
            problems.append(f"the state server (pid {server.pid}) does not answer its health check: see {server.log_file}")
    if found.running and rec is not None:
        # A TCP connect is enough here (importing grpc would double the CLI's start-up time):
        # the server listens on gRPC before HTTP, and shuts both down together.
        server.grpc_listening = _port_open(rec.grpc_port)
        if store and found.healthy and not server.grpc_listening:
            problems.append(f"the state server does not listen on its gRPC port {rec.grpc_port}: see {server.log_file}")
    stores: list[StoreStatus] = []
    if found.healthy and rec is not None:
        # The server pings its stores; ask it (with the token it was started with, if any).
        meta = daemon.metadata(rec.http_port, os.environ.get("DAPR_API_TOKEN") or None)
        for comp in (meta or {}).get("components") or []:
            health = comp.get("health") or {}
            st = StoreStatus(str(comp.get("name")), comp.get("type"), str(health.get("status", "unknown")), health.get("error"))
            stores.append(st)
            if st.status == "down":
                problems.append(f"the state server cannot use store {st.name!r}: {st.error}")
    return StatusResult(
        str(home), store, docker_status, container, sorted(components, key=lambda c: c.file), server, problems, stores
    )


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


# --- uninstall ------------------------------------------------------------------------------


@dataclass
class UninstallResult:
    """What uninstall removed, kept, and could not remove."""

    home: str
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def uninstall(home_opt: Path | None = None, everything: bool = False) -> UninstallResult:
    """Stop the server and remove the container; with ``everything`` also data, files, logs.

    Never raises for a part that fails: it is listed in ``failed`` and the rest goes on.
    """
    home = paths.home(home_opt)
    key = home_key(home)
    setup = _read_setup(key)
    res = UninstallResult(str(home))

    try:
        rec = daemon.stop(key)
        if rec is not None:
            res.removed.append(f"state server (pid {rec.pid}, port {rec.http_port}) stopped")
    except DevinitError as e:
        res.failed.append(f"state server: {e}")

    try:
        docker: Docker | None = Docker.connect(timeout=30)
    except DockerError as e:
        docker = None
        if setup.get("store") == "redis":
            res.failed.append(f"Redis container and volume: {e}")
    if docker is not None:
        try:
            for name in docker.remove_containers(home):
                res.removed.append(f"container {name}")
            for vol in docker.volumes(home):
                if everything:
                    docker.remove_volume(vol)
                    res.removed.append(f"volume {vol} (Redis data)")
                else:
                    res.kept.append(f"volume {vol} (Redis data; 'uninstall --all' removes it)")
        except DockerError as e:
            res.failed.append(str(e))

    comp = Path((setup.get("component") or {}).get("path") or paths.components_dir(home) / f"{COMPONENT}.yaml")
    written_sha = (setup.get("component") or {}).get("sha256")
    if comp.exists():
        try:
            ours = written_sha is not None and _sha256(comp.read_bytes()) == written_sha
            if everything and ours:
                comp.unlink()
                res.removed.append(f"component file {comp}")
            elif everything:
                res.kept.append(f"component file {comp} (not written by devinit, or changed since)")
            elif ours:
                res.kept.append(f"component file {comp} ('uninstall --all' removes it)")
        except OSError as e:
            res.failed.append(f"component file {comp}: {e}")

    files = [(sqlite_db(key), "SQLite data")]
    files += [(Path(f"{sqlite_db(key)}{suffix}"), "SQLite data") for suffix in ("-wal", "-shm", "-journal")]
    files += [(daemon.log_file(key), "server log")]
    for path, what in files:
        if not path.exists():
            continue
        if not everything:
            if what == "SQLite data" and path == sqlite_db(key):
                res.kept.append(f"{what} {path} ('uninstall --all' removes it)")
            continue
        try:
            path.unlink()
            res.removed.append(f"{what} {path}")
        except OSError as e:
            res.failed.append(f"{what} {path}: {e}")

    if everything and res.ok and setup_file(key).exists():
        # Forget the setup (and its password) only once everything it describes is gone.
        setup_file(key).unlink()
    return res
