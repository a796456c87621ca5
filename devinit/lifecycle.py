"""init / status / uninstall: the one-command setup, as functions returning results.

Nothing here prints; ``cli.py`` renders the results. Everything ``init`` sets up for a home
folder is keyed by that folder (``paths.home_key``): the container and volume labels, and
devinit's own files (``paths`` names them all), among them the setup record
(``setup_record.SetupRecord``: the store chosen, the Redis image/port/password, and the sha256
of the component file devinit wrote, to tell a file the user changed).

``init`` is idempotent, and when one of its steps fails it undoes what that run created and
says what was left in place. It reports success only once the server itself reports every
store up, from a check made after the repair.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devinit import daemon, paths, ports, setup_record
from devinit.atomic import write_atomic
from devinit.docker_redis import (
    DEFAULT_IMAGE,
    ContainerInfo,
    Docker,
    Endpoint,
    PullProgress,
    RedisSpec,
    choose_port,
    ping,
    resolve_endpoint,
)
from devinit.errors import DaemonError, DevinitError, DockerError, ImagePullError, UsageError
from devinit.runs import RunningApp, running_apps
from devinit.setup_record import ComponentSetup, RedisSetup, SetupRecord

STORES = ("redis", "sqlite")
COMPONENT = "statestore"
DEFAULT_HTTP_PORT = 3500
DEFAULT_GRPC_PORT = 50001
#: how long init waits for the server to report every store up after a repair
STORES_UP_TIMEOUT = 30.0
#: how long status waits for a health check made after its question
FRESH_HEALTH_TIMEOUT = 6.0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _token() -> str | None:
    """The API token devinit's own calls to the server send (the one it was started with)."""
    return os.environ.get("DAPR_API_TOKEN") or None


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

    what: str  # "image", "volume", "container", "component", "server", "stores"
    action: str  # "unchanged", "created", "started", "recreated", "restarted", "written", "updated", "kept", "pulled", "up"
    detail: str

    @property
    def changed(self) -> bool:
        return self.action not in ("unchanged", "kept", "up")


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
        # 127.0.0.1, not localhost: localhost tries ::1 first, where nothing listens.
        return f"http://127.0.0.1:{self.http_port}/v1.0/state/{COMPONENT}"


class Undo:
    """What this run created, to take back (newest first) if a later step fails."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Callable[[], object]]] = []
        self.left: list[str] = []  # things that existed before this run and stay

    def add(self, what: str, action: Callable[[], object]) -> None:
        self.actions.append((what, action))

    def run(self) -> str:
        """Undo everything (best effort); a summary of what was undone, not undone, and left."""
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
    key = paths.home_key(home)
    setup = setup_record.read(key, str(home))
    undo = Undo()
    record_file = paths.setup_file(key)
    before = record_file.read_bytes() if record_file.exists() else None
    try:
        return _init(opts, home, key, setup, undo, on_pull)
    except BaseException as e:
        summary = undo.run()
        # Put back devinit's record as it was: what it describes is what is left.
        if before is None:
            record_file.unlink(missing_ok=True)
        else:
            write_atomic(record_file, before)
        if isinstance(e, DevinitError) and e.args:
            e.args = (f"{e.args[0]}\n{summary}", *e.args[1:])
        raise


def _init(
    opts: InitOptions,
    home: Path,
    key: str,
    setup: SetupRecord,
    undo: Undo,
    on_pull: Callable[[PullProgress], None] | None,
) -> InitResult:
    notes: list[str] = []
    store, docker = _choose_store(opts, home, setup, notes)
    http_port, grpc_port = server_ports(opts, setup, notes)
    comp_dir = paths.components_dir(home)
    result = InitResult(home, store, http_port, grpc_port, comp_dir / f"{COMPONENT}.yaml", notes=notes)
    # What this run does not touch is kept (a Redis setup stays on record while on SQLite).
    new = SetupRecord(str(home), store, http_port, grpc_port, setup.redis, setup.sqlite_db, setup.component)

    plan = _plan_redis(docker, opts, home, setup) if docker is not None else None
    if plan is not None and plan.needs_image:
        assert docker is not None
        try:
            _pull(docker, plan.spec.image, result, on_pull)
        except ImagePullError as e:
            # Offline, or no registry: without --store, --image or a Redis setup to keep, run
            # on the embedded store as when Docker is absent.
            if opts.store is not None or opts.image is not None or setup.store == "redis":
                raise
            notes.append(
                f"Docker has no image {plan.spec.image} and could not pull it ({e.reason}): "
                "using the embedded SQLite store instead."
            )
            store = result.store = new.store = "sqlite"
            plan = None

    if plan is not None:
        assert docker is not None
        values = _apply_redis(docker, plan, new, result, undo, opts.timeout)
        template = "statestore-redis"
    else:
        db = paths.sqlite_db(key)
        # The apps' data: a folder only its owner can enter (SQLite creates the file 0644, and
        # a home folder may be 0755), as the setup record and the component file are 0600.
        db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.name == "posix" and db.parent.stat().st_mode & 0o077:
            db.parent.chmod(0o700)  # a folder an older devinit made 0755: mkdir leaves it as it is
        new.sqlite_db = str(db)
        values = {"connectionString": str(db)}
        template = "statestore-sqlite"

    component_changed = _write_component(result, template, values, setup, new, opts.force, undo)
    result.notes += setup_record.write(key, new)
    _init_server(key, comp_dir, http_port, grpc_port, component_changed, result, undo)
    _wait_stores_up(http_port, result, min(opts.timeout, STORES_UP_TIMEOUT))
    return result


def _choose_store(opts: InitOptions, home: Path, setup: SetupRecord, notes: list[str]) -> tuple[str, Docker | None]:
    """The store for this run, and the Docker engine when it is Redis."""
    store = opts.store or setup.store
    if store == "sqlite":
        if opts.store is None:
            notes.append("Using the embedded SQLite store, as set up before ('devinit init --store redis' switches to Redis).")
        return "sqlite", None
    try:
        return "redis", Docker.connect()
    except DockerError as e:
        if opts.store == "redis":
            raise
        if store == "redis":  # set up with Redis before: do not switch stores silently
            raise DockerError(
                f"{e.args[0].rstrip('.')}. devinit was set up with Redis in Docker for {home}; "
                "start Docker, or run 'devinit init --store sqlite' to switch to the embedded SQLite store"
            ) from None
        notes.append(f"Docker is not reachable at {_endpoint_text()}: using the embedded SQLite store instead.")
        return "sqlite", None


def _endpoint_text() -> str:
    try:
        return resolve_endpoint().describe()
    except DevinitError as e:
        return str(e)


def server_ports(
    opts: InitOptions, setup: SetupRecord, notes: list[str], probe: Callable[[int], ports.PortState] = ports.probe
) -> tuple[int, int]:
    """The HTTP and gRPC ports: as asked, else as before, else the defaults.

    A port that was not asked for on this run and that the OS refuses outright (a Windows
    reserved range, WinError 10013) is replaced by a free one, with a note saying so; a port
    that is merely in use stays, and the server start says what holds it.
    """
    chosen = []
    for name, asked, before, default, option, env in (
        ("HTTP", opts.http_port, setup.http_port, DEFAULT_HTTP_PORT, "--http-port", "DAPR_HTTP_PORT"),
        ("gRPC", opts.grpc_port, setup.grpc_port, DEFAULT_GRPC_PORT, "--grpc-port", "DAPR_GRPC_PORT"),
    ):
        port = asked or before or default
        if asked is None and probe(port) is ports.PortState.RESERVED:
            other = ports.any_free()
            notes.append(
                f"The {name} port {port} cannot be used: {ports.refusal(port, option)}. Using {other} instead; "
                f"set {env}={other} for Dapr SDKs."
            )
            port = other
        chosen.append(port)
    return chosen[0], chosen[1]


# --- Redis in Docker --------------------------------------------------------------------------


@dataclass
class RedisPlan:
    """The container init wants, and what the engine has now."""

    spec: RedisSpec
    existing: ContainerInfo | None  # devinit's container for this home, any state

    @property
    def recreate(self) -> bool:
        """The existing container was made from other settings."""
        return self.existing is not None and self.existing.config_hash != self.spec.config_hash()

    @property
    def needs_image(self) -> bool:
        """A container will be created (none, or one to recreate)."""
        return self.existing is None or self.recreate


def _plan_redis(docker: Docker, opts: InitOptions, home: Path, setup: SetupRecord) -> RedisPlan:
    recorded = setup.redis
    image = opts.image or (recorded.image if recorded else None) or DEFAULT_IMAGE
    existing = docker.find_container(home)
    # Keep the password Redis already has (the container's, else the one on record) so that
    # the component file and any app configured with it stay valid.
    password = (existing.password if existing else None) or (recorded.password if recorded else None) or secrets.token_urlsafe(24)
    if opts.redis_port:
        port = opts.redis_port
    elif existing and existing.host_port:
        port = existing.host_port
    elif recorded and ports.probe(recorded.port) is ports.PortState.FREE:
        port = recorded.port
    else:
        port = choose_port()
    return RedisPlan(RedisSpec(home, image, port, password), existing)


def _pull(docker: Docker, image: str, result: InitResult, on_pull: Callable[[PullProgress], None] | None) -> None:
    if docker.image_present(image):
        result.steps.append(Step("image", "unchanged", f"{image} is present"))
        return
    docker.pull(image, on_pull)
    # A pulled image is shared with anything else on the engine: not undone.
    result.steps.append(Step("image", "pulled", image))


def _apply_redis(
    docker: Docker, plan: RedisPlan, new: SetupRecord, result: InitResult, undo: Undo, timeout: float
) -> dict[str, str]:
    """Make the engine match the plan (image already there); the component's values."""
    spec, existing, port = plan.spec, plan.existing, plan.spec.host_port
    new.redis = RedisSetup(spec.image, port, spec.password, spec.container_name, spec.volume_name)
    result.redis_port = port
    result.container = spec.container_name

    if existing is not None and plan.recreate:
        docker.remove_container(existing.id)
        # The old container cannot be put back; its data lives on in the volume.
        undo.left.append(f"container {existing.name} was removed to be recreated (its data volume stays)")
        result.steps.append(Step("container", "recreated", f"{spec.container_name}: made from other settings before"))
        existing = None
        recreated = True
    else:
        recreated = False

    if existing is None:
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
    docker.wait_ready(info, port, spec.password, timeout=timeout)
    return {"redisHost": f"127.0.0.1:{port}", "redisPassword": spec.password}


# --- the component file and the server ----------------------------------------------------------


def _write_component(
    result: InitResult,
    template: str,
    values: dict[str, str],
    setup: SetupRecord,
    new: SetupRecord,
    force: bool,
    undo: Undo,
) -> bool:
    """Write the component file unless the user owns it; True when its content changed."""
    from devinit.components import render_template

    path = result.component_file
    desired = render_template(template, **values).encode()
    written_sha = setup.component.sha256 if setup.component else None
    new.component = ComponentSetup(str(path), written_sha)
    try:
        current: bytes | None = path.read_bytes()
    except FileNotFoundError:
        current = None
    if current is not None and current == desired:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # it holds a password
        new.component.sha256 = _sha256(desired)
        result.steps.append(Step("component", "unchanged", str(path)))
        return False
    if current is not None and not force and _sha256(current) != written_sha:
        why = "was changed since devinit wrote it" if written_sha else "was not written by devinit"
        result.steps.append(Step("component", "kept", f"{path} {why}; 'devinit init --force' overwrites it"))
        result.notes.append(f"Kept {path}: it {why}. Use --force to overwrite it with devinit's.")
        return False
    result.notes += write_atomic(path, desired, 0o600)
    new.component.sha256 = _sha256(desired)
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
    undo: Undo,
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
        daemon.stop(key)  # removes the stale record
        action, why = "restarted", "the previous one had stopped"
    else:
        why = ""
    started = daemon.start(key, comp_dir, http_port, grpc_port)
    undo.add(f"stopped the server (pid {started.pid})", lambda: daemon.stop(key))
    result.steps.append(Step("server", action, f"pid {started.pid} on port {http_port}" + (f" ({why})" if why else "")))


def _wait_stores_up(http_port: int, result: InitResult, timeout: float) -> None:
    """Until the server reports every store up from a check made after this call; DaemonError if not in time."""
    deadline = time.monotonic() + timeout
    while True:
        asked = time.time()
        comps = daemon.store_health(http_port, _token(), fresh_after=asked, timeout=max(0.0, deadline - time.monotonic()))
        if comps is None:
            raise DaemonError(f"the state server on port {http_port} stopped answering /v1.0/metadata. See 'devinit status'")
        down = [c for c in comps if (c.get("health") or {}).get("status", "up") != "up"]
        if not down:
            names = ", ".join(str(c.get("name")) for c in comps) or "none"
            result.steps.append(Step("stores", "up", f"the server reports {names} up"))
            return
        if time.monotonic() >= deadline:
            why = "; ".join(f"{c.get('name')!r}: {(c.get('health') or {}).get('error') or 'not checked yet'}" for c in down)
            raise DaemonError(
                f"the state server does not report every store up after {timeout:.0f}s ({why}). "
                "Check the component files and that the databases they name run; 'devinit status' shows each store"
            )
        time.sleep(0.2)


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
    """A state store as the running server sees it (a ping made after status asked)."""

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
    apps: list[RunningApp] = field(default_factory=list)  # under `devinit run` (not part of `healthy`)

    @property
    def healthy(self) -> bool:
        return self.store is not None and not self.problems

    def to_json(self) -> dict[str, Any]:
        """The ``status --json`` document (shape documented in README.md)."""
        return {"healthy": self.healthy, **asdict(self)}


def status(home_opt: Path | None = None) -> StatusResult:
    """Look at everything init sets up for the home folder, and say what is wrong."""
    home = paths.home(home_opt)
    key = paths.home_key(home)
    setup = setup_record.read(key, str(home))
    problems: list[str] = []
    if not setup.store:
        problems.append(f"devinit init has not been run for {home}: run 'devinit init'")
    docker_status, container = _docker_status(home, setup)
    problems += _docker_problems(setup.store, docker_status, container)
    components, component_problems = _component_status(home, setup.store)
    problems += component_problems
    found = daemon.find(key)
    server, server_problems = _server_status(key, setup.store, found)
    problems += server_problems
    stores, store_problems = _store_status(found)
    problems += store_problems
    return StatusResult(str(home), setup.store, docker_status, container, components, server, problems, stores, running_apps())


def _docker_status(home: Path, setup: SetupRecord) -> tuple[DockerStatus | None, ContainerStatus | None]:
    """The engine (reachable? version?) and devinit's container for ``home`` (PINGed with its password)."""
    try:
        endpoint: Endpoint = resolve_endpoint()
    except DockerError as e:
        return DockerStatus("?", "?", False, error=str(e)), None
    docker_status = DockerStatus(endpoint.url, endpoint.source, False)
    try:
        docker = Docker.connect(endpoint, timeout=10)
        docker_status.reachable = True
        docker_status.version = docker.version()
        info = docker.find_container(home)
    except DockerError as e:
        docker_status.error = str(e)
        return docker_status, None
    if info is None:
        return docker_status, None
    password = info.password or (setup.redis.password if setup.redis else None)
    why = ping(info.host_port, password) if info.state == "running" and info.host_port else f"container is {info.state}"
    return docker_status, ContainerStatus(
        info.name, info.id[:12], info.state, why is None, info.host_port, info.host_ip, info.image, why
    )


def _docker_problems(store: str | None, docker_status: DockerStatus | None, container: ContainerStatus | None) -> list[str]:
    if store != "redis":
        return []
    if docker_status is None or not docker_status.reachable:
        return [f"Docker is not reachable ({docker_status.error if docker_status else '?'})"]
    if container is None:
        return ["the Redis container is missing: run 'devinit init'"]
    if not container.healthy:
        return [f"the Redis container {container.name} is not healthy ({container.error}): run 'devinit init'"]
    return []


def _component_status(home: Path, store: str | None) -> tuple[list[ComponentStatus], list[str]]:
    """Every state component in the folder (valid or not), and whether init's own one loads."""
    from devinit.components import load_components

    loaded = load_components(paths.components_dir(home))
    components = [ComponentStatus(spec.name, spec.type, str(spec.path), True) for spec in loaded.specs]
    for err in loaded.errors:
        reason = err.reason if err.field == "(file)" else f"{err.field}: {err.reason}"
        components.append(ComponentStatus(err.component, None, err.path, False, reason))
    problems = []
    if store and not any(c.valid and c.name == COMPONENT for c in components):
        bad = loaded.error_for(COMPONENT)
        problems.append(
            f"component {COMPONENT!r} is not loaded ({bad})" if bad else f"component {COMPONENT!r} is missing: run 'devinit init'"
        )
    return sorted(components, key=lambda c: c.file), problems


def _server_status(key: str, store: str | None, found: daemon.ServerStatus) -> tuple[ServerInfo, list[str]]:
    """The background server: running, healthy, listening on gRPC."""
    rec = found.record
    server = ServerInfo(
        running=found.running,
        healthy=found.healthy,
        pid=rec.pid if rec else None,
        http_port=rec.http_port if rec else None,
        grpc_port=rec.grpc_port if rec else None,
        uptime_seconds=round(found.uptime, 1) if found.uptime is not None else None,
        log_file=rec.log_file if rec else str(paths.server_log(key)),
        pid_file=str(found.pid_file),
        stale_pid_file=found.stale,
    )
    problems = []
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
        server.grpc_listening = ports.accepts(rec.grpc_port)
        if store and found.healthy and not server.grpc_listening:
            problems.append(f"the state server does not listen on its gRPC port {rec.grpc_port}: see {server.log_file}")
    return server, problems


def _store_status(found: daemon.ServerStatus) -> tuple[list[StoreStatus], list[str]]:
    """Each store as the server sees it, from a ping made after this question (never an older one)."""
    if not found.healthy or found.record is None:
        return [], []
    comps = daemon.store_health(found.record.http_port, _token(), fresh_after=time.time(), timeout=FRESH_HEALTH_TIMEOUT)
    stores, problems = [], []
    for comp in comps or []:
        health = comp.get("health") or {}
        st = StoreStatus(str(comp.get("name")), comp.get("type"), str(health.get("status", "unknown")), health.get("error"))
        stores.append(st)
        if st.status == "down":
            problems.append(f"the state server cannot use store {st.name!r}: {st.error}")
    return stores, problems


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
    key = paths.home_key(home)
    setup = setup_record.read(key, str(home))
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
        if setup.store == "redis":
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

    comp = Path(setup.component.path if setup.component else paths.components_dir(home) / f"{COMPONENT}.yaml")
    written_sha = setup.component.sha256 if setup.component else None
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

    db = paths.sqlite_db(key)
    files = [(db, "SQLite data")]
    files += [(Path(f"{db}{suffix}"), "SQLite data") for suffix in ("-wal", "-shm", "-journal")]
    files += [(paths.server_log(key), "server log")]
    for path, what in files:
        if not path.exists():
            continue
        if not everything:
            if path == db:
                res.kept.append(f"{what} {path} ('uninstall --all' removes it)")
            continue
        try:
            path.unlink()
            res.removed.append(f"{what} {path}")
        except OSError as e:
            res.failed.append(f"{what} {path}: {e}")

    if everything and res.ok and paths.setup_file(key).exists():
        # Forget the setup (and its password) only once everything it describes is gone.
        paths.setup_file(key).unlink()
    return res
