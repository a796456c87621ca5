"""After `devinit init` (Redis in a real Docker container, with a password), Dapr's samples run
under `devinit run` unchanged: their components name `localhost:6379` with an empty password
(written for dapr init's password-less Redis), and devinit lends them the password of the
Redis it runs, says so once in the server's log, and never shows the password.

Plus the rule itself, on the component loader: which components get the password and which
never do.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import pytest

from devinit.components import KnownRedis, load_components
from lifecycle_support import Home, docker_client, ensure_test_image, home, remove_labelled  # noqa: F401
from run_support import APPS, redis_hget
from support import free_port, write_component

SAMPLE_PORT = 6379  # what Dapr's samples name


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_samples_run_unchanged_after_init(home: Home, tmp_path: Path) -> None:
    h = home
    client = docker_client()
    image = ensure_test_image(client)
    # init takes 6379 when it is free, and the samples then run as shipped; on a machine where
    # something else holds 6379, init takes another port and the copies below name that one.
    port = SAMPLE_PORT if _free(SAMPLE_PORT) else free_port()
    try:
        p = h.run(*h.init_args("--image", image, "--redis-port", str(port)))
        assert p.returncode == 0, p.stdout + p.stderr
        password = json.loads(next((h.data / "state").glob("setup-*.json")).read_text())["redis"]["password"]
        assert password

        sample = tmp_path / "state_store"
        shutil.copytree(APPS / "state_store", sample)
        qs = tmp_path / "state_management"
        shutil.copytree(APPS / "state_management", qs)
        if port != SAMPLE_PORT:
            for comp in (sample / "components" / "statestore.yaml", qs / "resources" / "statestore.yaml"):
                comp.write_text(comp.read_text().replace(f"localhost:{SAMPLE_PORT}", f"localhost:{port}"))

        # dapr/python-sdk's way: dapr run --resources-path components/ -- python3 state_store.py
        out = _run(
            h, sample, "run", "--app-id", "state-store", "--resources-path", "components/", "--", sys.executable, "state_store.py"
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.splitlines()[-1] == "done"
        note = f"is the Redis that 'devinit init' runs for {h.dapr}; using its password (the component's is empty)"
        assert out.stderr.count(note) == 1, out.stderr
        assert "skipped component 'pubsub' (pubsub.redis)" in out.stderr
        assert redis_hget(port, "state-store||order-1", password=password) == "shipped"

        # dapr/quickstarts' way: cd python && dapr run -f .
        out = _run(h, qs / "python", "run", "-f", ".", env={"ORDER_COUNT": "2"})
        assert out.returncode == 0, out.stdout + out.stderr
        assert "== APP - order-processor == done with 2 orders" in out.stdout
        assert json.loads(redis_hget(port, "order-processor||2", password=password)) == {"orderId": 2, "item": "item-2"}
        [log] = (qs / "python" / "order-processor" / ".dapr" / "logs").glob("order-processor_daprd_*.log")
        assert note in log.read_text()

        # the password itself is never shown: not on the terminal, not in a log file
        logs = "".join(f.read_text() for f in qs.rglob("*.log"))
        assert password not in out.stdout + out.stderr + logs
    finally:
        h.run("uninstall", "--all")
        remove_labelled(client, h.dapr)


def _run(h: Home, cwd: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    import subprocess

    from support import devinit_env

    return subprocess.run(
        [sys.executable, "-m", "devinit", *args],
        cwd=cwd,
        env=devinit_env({**h.env, **(env or {})}),
        capture_output=True,
        text=True,
        timeout=240,
    )


# --- the rule ---------------------------------------------------------------------------------

KNOWN = KnownRedis(port=6380, password="init-password", home="/home/u/.dapr")


@pytest.mark.parametrize("host", ["localhost:6380", "127.0.0.1:6380", "::1:6380", "[::1]:6380", "LOCALHOST:6380"])
def test_the_init_redis_password_is_lent_to_a_component_naming_that_redis(tmp_path: Path, host: str) -> None:
    write_component(tmp_path, "statestore", "state.redis", {"redisHost": host, "redisPassword": ""})
    loaded = load_components(tmp_path, known_redis=KNOWN)
    [spec] = loaded.specs
    assert spec.metadata["redisPassword"] == "init-password"
    [note] = loaded.notes
    assert f"{host} is the Redis that 'devinit init' runs for /home/u/.dapr; using its password" in note
    assert "init-password" not in note and "init-password" not in repr(KNOWN)


@pytest.mark.parametrize(
    "metadata",
    [
        {"redisHost": "redis.example.com:6380"},  # another host
        {"redisHost": "10.0.0.5:6380"},
        {"redisHost": "localhost:6379"},  # another port
        {"redisHost": "localhost:6380", "redisPassword": "its-own"},  # a password of its own
        {"redisHost": "localhost:6380", "redisType": "cluster"},  # a Cluster names other nodes
        {"redisHost": "localhost:6380", "failover": "true", "sentinelMasterName": "m"},  # a Sentinel
        {"redisHost": "localhost"},  # no port: not that Redis
    ],
)
def test_the_password_is_never_lent_to_any_other_redis(tmp_path: Path, metadata: dict[str, str]) -> None:
    write_component(tmp_path, "statestore", "state.redis", metadata)
    loaded = load_components(tmp_path, known_redis=KNOWN)
    [spec] = loaded.specs
    assert spec.metadata.get("redisPassword", "") == metadata.get("redisPassword", "")
    assert loaded.notes == []


def test_other_store_types_never_get_it(tmp_path: Path) -> None:
    write_component(tmp_path, "statestore", "state.sqlite", {"connectionString": "localhost:6380"})
    loaded = load_components(tmp_path, known_redis=KNOWN)
    assert "redisPassword" not in loaded.specs[0].metadata and loaded.notes == []
