"""Every path devinit reads or writes, in one place.

- home: ``--home``, else ``DEVINIT_HOME``, else ``~/.dapr`` (``%USERPROFILE%\\.dapr`` on
  Windows, which is what ``Path.home()`` gives there). Components live in ``<home>/components``.
- devinit's own files (SQLite data, pid file, logs) live in platformdirs' per-user folders,
  unless ``DEVINIT_DATA_DIR`` points elsewhere (tests use it to stay inside a temp folder).
"""

from __future__ import annotations

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
    """Where devinit keeps run state (the background server's pid file)."""
    return _platform_dir("state")


def log_dir() -> Path:
    """Where the background server writes its log."""
    return _platform_dir("log")
