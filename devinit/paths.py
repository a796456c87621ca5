"""Every path devinit reads or writes, in one place.

- home: ``--home``, else ``DEVINIT_HOME``, else ``~/.dapr`` (``%USERPROFILE%\\.dapr`` on
  Windows, which is what ``Path.home()`` gives there). Components live in ``<home>/components``.
- devinit's own files live in platformdirs' per-user folders, unless ``DEVINIT_DATA_DIR``
  points elsewhere (tests use it to stay inside a temp folder). Each is named by the home
  folder's key (``home_key``), so that two homes never share a file:

  ============================  ================================================================
  ``state/setup-<key>.json``    the setup record (owner-only: it holds the Redis password)
  ``state/server-<key>.json``   the background server's record (pid, ports, start time, argv)
  ``state/server-<key>.pid``    the pid the server writes itself once it listens (``--pid-file``)
  ``log/server-<key>.log``      the background server's log (UTF-8)
  ``data/statestore-<key>.db``  the embedded SQLite store
  ============================  ================================================================
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

APP = "devinit"


def home(override: str | os.PathLike[str] | None = None) -> Path:
    """devinit's home: where the Dapr-format components folder is."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("DEVINIT_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".dapr"


def home_key(home_dir: Path) -> str:
    """12 hex digits naming ``home_dir`` (resolved): in Docker names, labels and devinit's files."""
    return hashlib.sha256(str(home_dir.expanduser().resolve()).encode()).hexdigest()[:12]


def components_dir(home_dir: Path | None = None) -> Path:
    """The components folder under ``home_dir`` (default: ``home()``)."""
    return (home_dir or home()) / "components"


def _platform_dir(kind: str) -> Path:
    override = os.environ.get("DEVINIT_DATA_DIR")
    if override:
        return Path(override).expanduser() / kind
    import platformdirs  # lazy: keeps `devinit --help` fast

    if kind == "data":
        return Path(platformdirs.user_data_dir(APP, appauthor=False))
    if kind == "state":
        return Path(platformdirs.user_state_dir(APP, appauthor=False))
    return Path(platformdirs.user_log_dir(APP, appauthor=False))


def data_dir() -> Path:
    """Where devinit keeps data it owns (the embedded SQLite database)."""
    return _platform_dir("data")


def state_dir() -> Path:
    """Where devinit keeps run state (the setup record, the background server's records)."""
    return _platform_dir("state")


def log_dir() -> Path:
    """Where the background server writes its log."""
    return _platform_dir("log")


def setup_file(key: str) -> Path:
    """What init set up for the home folder named by ``key`` (owner-only: it holds a password)."""
    return state_dir() / f"setup-{key}.json"


def server_record(key: str) -> Path:
    """The background server's record (JSON: pid, ports, start time, command line)."""
    return state_dir() / f"server-{key}.json"


def server_pid_file(key: str) -> Path:
    """The file the background server writes its own pid into once it listens."""
    return state_dir() / f"server-{key}.pid"


def server_log(key: str) -> Path:
    """The background server's log."""
    return log_dir() / f"server-{key}.log"


def sqlite_db(key: str) -> Path:
    """The embedded SQLite database for the home folder named by ``key``."""
    return data_dir() / f"statestore-{key}.db"
