"""Print the table of docs/platforms.md: does every runtime dependency have a wheel everywhere?

    python scripts/wheel_table.py            # with devinit's dependencies installed (pip install .)

The dependencies are devinit's own (pyproject.toml) and theirs, as installed here, for any OS
(markers are evaluated for Windows, macOS and Linux); for each, the newest release's files on
PyPI (https://pypi.org/pypi/<name>/json) are read and every target below is checked for a
wheel that installs there: pure Python (``py3-none-any``), or built for that platform and each
Python from 3.11 (``cp3X`` or an older ``abi3``).
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
import urllib.request
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag
from packaging.utils import parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = [11, 12, 13, 14]
TARGETS = {
    "Windows x86-64": ("win32", lambda p: p == "win_amd64"),
    "Windows ARM64": ("win32", lambda p: p == "win_arm64"),
    "macOS Intel": ("darwin", lambda p: p.startswith("macosx") and p.endswith(("x86_64", "universal2"))),
    "macOS Apple Silicon": ("darwin", lambda p: p.startswith("macosx") and p.endswith(("arm64", "universal2"))),
    "Linux x86-64": ("linux", lambda p: p.startswith("manylinux") and p.endswith("x86_64")),
    "Linux ARM64": ("linux", lambda p: p.startswith("manylinux") and p.endswith("aarch64")),
}
ENVS = {
    "win32": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
    "darwin": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"},
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
}


def closure() -> dict[str, set[str]]:
    """Each dependency's name -> the OSes it is installed on."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found: dict[str, set[str]] = {}
    todo = [(Requirement(r), None) for r in project["dependencies"]]
    while todo:
        req, parent_extras = todo.pop()
        for os_name, env in ENVS.items():
            full = {**env, "python_version": "3.11", "python_full_version": "3.11.0", "extra": ""}
            if req.marker is not None and not any(
                req.marker.evaluate({**full, "extra": e}) for e in ["", *(parent_extras or [])]
            ):
                continue
            name = req.name.lower().replace("_", "-")
            if os_name in found.setdefault(name, set()):
                continue
            found[name].add(os_name)
            try:
                todo += [(Requirement(r), req.extras) for r in requires(req.name) or []]
            except PackageNotFoundError:
                pass  # not installed here (e.g. pywin32 off Windows): its own deps are not followed
    return found


def installs(tag: Tag, python: int, platform_ok) -> bool:  # type: ignore[no-untyped-def]
    if tag.platform == "any":
        return tag.interpreter.startswith("py3") or tag.interpreter == f"cp3{python}"
    if not platform_ok(tag.platform):
        return False
    if tag.abi == "abi3":
        m = re.fullmatch(r"cp3(\d+)", tag.interpreter)
        return m is not None and int(m.group(1)) <= python
    return tag.interpreter == f"cp3{python}" and tag.abi in (f"cp3{python}", "none")


def main() -> int:
    print("| package | version | " + " | ".join(TARGETS) + " |")
    print("|---|---|" + "---|" * len(TARGETS))
    for name, oses in sorted(closure().items()):
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=60) as r:
            data = json.load(r)
        version = data["info"]["version"]
        tags = {
            t
            for f in data["releases"][version]
            if f["packagetype"] == "bdist_wheel"
            for t in parse_wheel_filename(f["filename"])[3]
        }
        cells = []
        for os_name, platform_ok in TARGETS.values():
            if os_name not in oses:
                cells.append("not needed")
            elif any(t.platform == "any" for t in tags):
                cells.append("pure Python")
            else:
                missing = [f"3.{p}" for p in PYTHONS if not any(installs(t, p, platform_ok) for t in tags)]
                cells.append("wheels" if not missing else "no wheel for " + ", ".join(missing))
        print(f"| {name} | {version} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
