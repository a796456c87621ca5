"""Redis in Docker for devinit: find the engine, get the image, run the labelled container.

Everything devinit creates in Docker carries ``io.devinit.managed=true`` plus the home folder
it belongs to (``io.devinit.home``), so one user's setups (and parallel test runs, each with
its own home) never touch each other; the container also carries a hash of the settings it
was made from (``io.devinit.config``) so ``init`` can tell when it must be recreated.

Docker SDK errors are translated here, once, into ``DockerError`` / ``ImagePullError`` /
``ReadinessTimeout`` that name the endpoint or image and say what to do; that includes the
``pywintypes.error`` the SDK's named-pipe transport raises on Windows (not an OSError), e.g.
when Docker Desktop restarts. ``docker`` and ``redis`` are imported inside functions so that
``devinit --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devinit import ports
from devinit.errors import DockerError, ImagePullError, ReadinessTimeout
from devinit.paths import home_key

#: Redis 7, pinned to a patch release and fully qualified (no dependence on registry mirrors
#: or a "latest" that moves under the user).
DEFAULT_IMAGE = "docker.io/library/redis:7.2.5"
REDIS_PORT = 6379

LABEL_MANAGED = "io.devinit.managed"
LABEL_HOME = "io.devinit.home"
LABEL_CONFIG = "io.devinit.config"

_UNIX_DEFAULT = "unix:///var/run/docker.sock"
_WINDOWS_DEFAULT = "npipe:////./pipe/docker_engine"


# --- endpoint -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where the Docker engine is expected, and why there (for error messages)."""

    url: str
    source: str  # "DOCKER_HOST", "docker context 'name'", or "platform default"
    tls_dir: Path | None = None  # client certificates of a TLS endpoint (ca.pem, cert.pem, key.pem)
    tls_verify: bool = True

    def describe(self) -> str:
        """``url (from source)``, as the messages show it."""
        return f"{self.url} (from {self.source})"


def default_endpoint(platform: str | None = None) -> str:
    """The engine's default address on ``platform`` (``sys.platform`` when None)."""
    return _WINDOWS_DEFAULT if (platform or sys.platform) == "win32" else _UNIX_DEFAULT


def docker_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``DOCKER_CONFIG``, else ``~/.docker`` (``%USERPROFILE%\\.docker`` on Windows)."""
    env = os.environ if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]).expanduser()
    return Path.home() / ".docker"


def resolve_endpoint(env: Mapping[str, str] | None = None, platform: str | None = None) -> Endpoint:
    """The Docker endpoint, as the docker CLI picks it.

    ``DOCKER_HOST``; else the current context (``DOCKER_CONTEXT``, else ``currentContext`` in
    ``config.json``) read from the contexts' meta store; else the platform default (unix
    socket, or the named pipe on Windows).
    """
    env = os.environ if env is None else env
    host = env.get("DOCKER_HOST")
    if host:
        # As the docker CLI: TLS when DOCKER_TLS_VERIFY is set, certificates from DOCKER_CERT_PATH.
        verify = env.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
        tls_dir = Path(env.get("DOCKER_CERT_PATH") or docker_config_dir(env)).expanduser() if verify else None
        return Endpoint(host, "DOCKER_HOST", tls_dir, verify)
    cfg_dir = docker_config_dir(env)
    context = env.get("DOCKER_CONTEXT")
    source = "DOCKER_CONTEXT"
    if not context:
        source = f"currentContext in {cfg_dir / 'config.json'}"
        try:
            context = json.loads((cfg_dir / "config.json").read_text(encoding="utf-8")).get("currentContext")
        except (OSError, ValueError, AttributeError):
            context = None
    if context and context != "default":
        # The CLI stores a context under the sha256 of its name.
        digest = hashlib.sha256(context.encode()).hexdigest()
        meta_file = cfg_dir / "contexts" / "meta" / digest / "meta.json"
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            docker_ep = meta["Endpoints"]["docker"]
            url = docker_ep["Host"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DockerError(
                f"the Docker context {context!r} (from {source}) cannot be read from {meta_file} ({e}). "
                "Run 'docker context use default', or set DOCKER_HOST to your engine's address"
            ) from None
        tls_dir = cfg_dir / "contexts" / "tls" / digest / "docker"
        return Endpoint(
            url,
            f"docker context {context!r}",
            tls_dir if tls_dir.is_dir() else None,
            not docker_ep.get("SkipTLSVerify", False),
        )
    return Endpoint(default_endpoint(platform), "platform default")


def _fix_hint(endpoint: Endpoint) -> str:
    if endpoint.source == "platform default":
        return "Start Docker (Docker Desktop, or 'sudo systemctl start docker'), or set DOCKER_HOST to your engine's address"
    if endpoint.source == "DOCKER_HOST":
        return "Check that the engine runs there, or unset DOCKER_HOST to use the current Docker context"
    return "Start that engine, or switch with 'docker context use default' (or set DOCKER_HOST)"


# --- the client -----------------------------------------------------------------------------


@dataclass
class PullProgress:
    """Where a pull is: layers done/total, bytes downloaded/expected so far."""

    image: str
    layers_total: int = 0
    layers_done: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    status: str = ""
    _layers: dict[str, tuple[int, int, bool]] = field(default_factory=dict, repr=False)

    def update(self, event: Mapping[str, Any]) -> None:
        """Fold one event of the engine's pull stream into the totals."""
        status = str(event.get("status", ""))
        self.status = status
        layer = event.get("id")
        if not layer or status.startswith(("Pulling from", "Digest", "Status")):
            return
        cur, total, done = self._layers.get(layer, (0, 0, False))
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and detail.get("total"):
            cur, total = int(detail.get("current", 0)), int(detail["total"])
        elif status in ("Download complete", "Verifying Checksum"):
            cur = total
        elif status in ("Pull complete", "Already exists"):
            cur, done = total, True
        self._layers[layer] = (cur, total, done)
        self.layers_total = len(self._layers)
        self.layers_done = sum(1 for _, _, d in self._layers.values() if d)
        self.bytes_done = sum(c for c, _, _ in self._layers.values())
        self.bytes_total = sum(t for _, t, _ in self._layers.values())


@dataclass(frozen=True)
class RedisSpec:
    """The Redis container devinit wants for one home folder."""

    home: Path
    image: str
    host_port: int
    password: str

    @property
    def key(self) -> str:
        """A short, stable id of the home folder (names of the container and the volume)."""
        return home_key(self.home)

    @property
    def container_name(self) -> str:
        return f"devinit-redis-{self.key}"

    @property
    def volume_name(self) -> str:
        return f"devinit-redis-data-{self.key}"

    def command(self) -> list[str]:
        """redis-server's arguments: password, AOF into the /data volume."""
        return [
            "redis-server",
            "--port",
            str(REDIS_PORT),
            "--requirepass",
            self.password,
            "--appendonly",
            "yes",
            "--dir",
            "/data",
        ]

    def config_hash(self) -> str:
        """A hash of everything the container is made from (the password only as part of it)."""
        blob = json.dumps({"v": 1, "image": self.image, "port": self.host_port, "cmd": self.command()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def labels(self) -> dict[str, str]:
        return {**home_labels(self.home), LABEL_CONFIG: self.config_hash()}


def home_labels(home: Path) -> dict[str, str]:
    """The labels that mark something as devinit's, for this home folder."""
    return {LABEL_MANAGED: "true", LABEL_HOME: str(home.expanduser().resolve())}


@dataclass(frozen=True)
class ContainerInfo:
    """What ``status`` and ``init`` need to know about the container."""

    id: str
    name: str
    state: str  # created, running, exited, ...
    image: str
    host_port: int | None
    host_ip: str | None
    config_hash: str | None
    password: str | None  # read back from the container's command; never printed


def choose_port(preferred: int = REDIS_PORT) -> int:
    """``preferred`` when it is free on 127.0.0.1, else a free port the OS picks."""
    return preferred if ports.probe(preferred) is ports.PortState.FREE else ports.any_free()


class Docker:
    """A connected Docker engine; every SDK error leaves here as a DevinitError."""

    def __init__(self, client: Any, endpoint: Endpoint) -> None:
        self.client = client
        self.endpoint = endpoint

    @classmethod
    def connect(cls, endpoint: Endpoint | None = None, timeout: float = 60.0) -> Docker:
        """Connect and check the engine answers; DockerError (naming the endpoint) if not."""
        endpoint = endpoint or resolve_endpoint()
        try:
            import docker
            from docker.tls import TLSConfig

            tls: Any = False
            if endpoint.tls_dir is not None:
                d = endpoint.tls_dir
                tls = TLSConfig(
                    client_cert=(str(d / "cert.pem"), str(d / "key.pem")),
                    ca_cert=str(d / "ca.pem") if endpoint.tls_verify else None,
                    verify=endpoint.tls_verify,
                )
            client = docker.DockerClient(base_url=endpoint.url, tls=tls, timeout=int(timeout))
            client.ping()
        except DockerError:
            raise
        except Exception as e:  # the SDK raises DockerException, requests' errors, OSError...
            raise DockerError(
                f"cannot reach the Docker engine at {endpoint.describe()}: {_short(e)}. {_fix_hint(endpoint)}"
            ) from None
        return cls(client, endpoint)

    @contextlib.contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        try:
            yield
        except DockerError:
            raise
        except Exception as e:
            if not _is_docker_error(e):
                raise
            raise DockerError(
                f"{doing} failed on the Docker engine at {self.endpoint.url}: {_short(e)}. "
                "Check 'docker info'; 'devinit status' shows what devinit has"
            ) from None

    def version(self) -> str:
        """The engine's version string."""
        with self._translate("asking the engine's version"):
            return str(self.client.version().get("Version", "?"))

    # images

    def image_present(self, image: str) -> bool:
        """True when ``image`` is in the local image store."""
        from docker.errors import ImageNotFound

        with self._translate(f"looking up image {image}"):
            try:
                self.client.images.get(image)
                return True
            except ImageNotFound:
                return False

    def pull(self, image: str, progress: Callable[[PullProgress], None] | None = None) -> None:
        """Pull ``image``, reporting progress; ImagePullError with the registry's words on failure."""
        from docker.utils import parse_repository_tag

        repo, tag = parse_repository_tag(image)
        state = PullProgress(image)
        error: str | None = None
        try:
            for event in self.client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if "error" in event:
                    error = str((event.get("errorDetail") or {}).get("message") or event["error"])
                    break
                state.update(event)
                if progress is not None:
                    progress(state)
        except Exception as e:
            if not _is_docker_error(e):
                raise
            error = _short(e)
        if error is None and not self.image_present(image):
            error = "the pull ended without the image"
        if error is not None:
            raise ImagePullError(
                f"could not pull image {image}: the registry said: {error}. "
                "Pass --image with an image you have locally ('docker images'), "
                "or use --store sqlite to run without Docker",
                error,
            )

    # containers

    def find_container(self, home: Path) -> ContainerInfo | None:
        """devinit's Redis container for ``home``, found by label (any state)."""
        found = self._containers(home)
        return _info(found[0]) if found else None

    def _containers(self, home: Path) -> list[Any]:
        labels = [f"{k}={v}" for k, v in home_labels(home).items()]
        with self._translate("listing devinit's containers"):
            return list(self.client.containers.list(all=True, filters={"label": labels}))

    def ensure_volume(self, spec: RedisSpec) -> bool:
        """Create the data volume unless it exists; True when this call created it."""
        from docker.errors import NotFound

        with self._translate(f"creating volume {spec.volume_name}"):
            try:
                self.client.volumes.get(spec.volume_name)
                return False
            except NotFound:
                self.client.volumes.create(spec.volume_name, labels=home_labels(spec.home))
                return True

    def create_container(self, spec: RedisSpec) -> ContainerInfo:
        """Create and start the container for ``spec`` (127.0.0.1 only, AOF on the volume)."""
        from docker.errors import NotFound

        with self._translate(f"creating container {spec.container_name}"):
            try:
                other = self.client.containers.get(spec.container_name)
            except NotFound:
                other = None
            if other is not None:
                raise DockerError(
                    f"a container called {spec.container_name} exists that devinit did not label as its own. "
                    f"Remove it ('docker rm -f {spec.container_name}') or use another --home"
                )
            c = self.client.containers.create(
                spec.image,
                command=spec.command(),
                name=spec.container_name,
                labels=spec.labels(),
                ports={f"{REDIS_PORT}/tcp": ("127.0.0.1", spec.host_port)},
                volumes={spec.volume_name: {"bind": "/data", "mode": "rw"}},
                restart_policy={"Name": "unless-stopped"},
                detach=True,
            )
        try:
            self.start_container(c.id)
        except BaseException:
            # Not left half-made: the caller only learns of the container once it started.
            with contextlib.suppress(Exception):
                c.remove(force=True)
            raise
        with self._translate(f"inspecting container {spec.container_name}"):
            c.reload()
            return _info(c)

    def start_container(self, container_id: str) -> None:
        """Start a created or stopped container."""
        with self._translate(f"starting container {container_id[:12]}"):
            c = self.client.containers.get(container_id)
            try:
                c.start()
            except Exception as e:
                # A port taken since the container was made is the usual cause: say so.
                raise DockerError(
                    f"container {c.name} could not start: {_short(e)}. "
                    "If the port is taken, pass --redis-port, or 'devinit uninstall' and init again"
                ) from None

    def remove_container(self, container_id: str) -> None:
        """Force-remove a container (running or not); its named volume stays."""
        from docker.errors import NotFound

        with self._translate(f"removing container {container_id[:12]}"):
            try:
                self.client.containers.get(container_id).remove(force=True)
            except NotFound:
                pass

    def remove_containers(self, home: Path) -> list[str]:
        """Remove every container labelled for ``home``; returns their names."""
        names = []
        for c in self._containers(home):
            self.remove_container(c.id)
            names.append(c.name)
        return names

    def volumes(self, home: Path) -> list[str]:
        """Names of the volumes labelled for ``home``."""
        labels = [f"{k}={v}" for k, v in home_labels(home).items()]
        with self._translate("listing devinit's volumes"):
            return [v.name for v in self.client.volumes.list(filters={"label": labels})]

    def remove_volume(self, name: str) -> None:
        """Remove a volume (its data is gone)."""
        from docker.errors import NotFound

        with self._translate(f"removing volume {name}"):
            try:
                self.client.volumes.get(name).remove(force=True)
            except NotFound:
                pass

    def logs(self, container_id: str, lines: int = 20) -> str:
        """The container's last ``lines`` log lines ('' when they cannot be read)."""
        try:
            raw = self.client.containers.get(container_id).logs(tail=lines)
        except Exception as e:
            if not _is_docker_error(e):
                raise
            return ""
        return str(raw.decode("utf-8", "replace")).rstrip()

    def wait_ready(self, info: ContainerInfo, port: int, password: str, timeout: float = 60.0) -> None:
        """PING Redis (with the password) until it answers; ReadinessTimeout with its logs if not."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            err = ping(port, password)
            if err is None:
                return
            last = err
            with self._translate(f"inspecting container {info.name}"):
                c = self.client.containers.get(info.id)
                c.reload()
                state = c.status
            if state in ("exited", "dead") or time.monotonic() >= deadline:
                what = f"exited ({state})" if state in ("exited", "dead") else f"did not answer PING within {timeout:.0f}s"
                logs = self.logs(info.id) or "(no log lines)"
                raise ReadinessTimeout(
                    f"Redis in container {info.name} {what} on 127.0.0.1:{port} (last error: {last}). "
                    f"Its last log lines:\n{logs}\n"
                    f"See 'docker logs {info.name}'; 'devinit uninstall' removes it"
                )
            time.sleep(0.2)


def ping(port: int, password: str | None, host: str = "127.0.0.1") -> str | None:
    """PING Redis at ``host:port``; None when it answers, else why not (without the password)."""
    import redis

    client = redis.Redis(host=host, port=port, password=password or None, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
        return None
    except redis.exceptions.RedisError as e:
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    finally:
        client.close()


def _info(c: Any) -> ContainerInfo:
    attrs = c.attrs
    cfg = attrs.get("Config") or {}
    cmd = list(cfg.get("Cmd") or [])
    password = None
    if "--requirepass" in cmd and cmd.index("--requirepass") + 1 < len(cmd):
        password = cmd[cmd.index("--requirepass") + 1]
    bindings = ((attrs.get("HostConfig") or {}).get("PortBindings") or {}).get(f"{REDIS_PORT}/tcp") or []
    port = int(bindings[0]["HostPort"]) if bindings and bindings[0].get("HostPort") else None
    host_ip = bindings[0].get("HostIp") if bindings else None
    labels = cfg.get("Labels") or {}
    return ContainerInfo(
        id=c.id,
        name=c.name,
        state=c.status,
        image=str(cfg.get("Image", "")),
        host_port=port,
        host_ip=host_ip,
        config_hash=labels.get(LABEL_CONFIG),
        password=password,
    )


def _is_docker_error(e: BaseException) -> bool:
    """The SDK's own errors and the transport errors under it (requests, sockets, named pipes)."""
    import requests
    from docker.errors import DockerException

    return isinstance(e, (DockerException, requests.exceptions.RequestException, OSError)) or _is_pywin_error(e)


def _is_pywin_error(e: BaseException) -> bool:
    """``pywintypes.error``, raised by the SDK's named-pipe transport on Windows.

    Told by its class's name, not by importing pywin32 (which exists on Windows only).
    """
    return any(c.__module__ == "pywintypes" and c.__name__ == "error" for c in type(e).__mro__)


def _short(e: BaseException) -> str:
    """The useful part of an SDK error: the engine's explanation, on one line."""
    if _is_pywin_error(e) and len(e.args) == 3:
        # pywintypes.error(winerror, funcname, strerror), e.g. (2, 'CreateFile', 'The system
        # cannot find the file specified.') when Docker Desktop's pipe is not there.
        winerror, funcname, strerror = e.args
        return f"{funcname}: {str(strerror).rstrip('.')} (Windows error {winerror})"
    text = str(getattr(e, "explanation", None) or e) or type(e).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."
