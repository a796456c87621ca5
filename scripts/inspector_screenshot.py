#!/usr/bin/env python3
"""The README's pictures of the inspector, taken by the headless Chromium the browser tests use.

Starts a `devinit serve` of this checkout (in-memory store, app id ``checkout``) on free ports,
writes a few orders and carts the way two apps would (over Dapr's HTTP API, and one app's keys
written raw), opens the page at 1280x800 and saves a PNG of each view asked for.

    python scripts/inspector_screenshot.py                    # docs/inspector-keys.png, docs/inspector-key.png
    python scripts/inspector_screenshot.py --dark --out /tmp  # the same in the dark theme, elsewhere
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402

from browser import Browser  # noqa: E402
from support import DevinitServer, write_component  # noqa: E402

VIEWS = {
    "keys": ("#/statestore", "tr.key-row"),
    "key": (f"#/statestore/{quote('checkout||order-1042', safe='')}", "#value .j-key"),
}


def seed(url: str) -> None:
    """Orders and carts of two apps, one with a TTL, one binary value."""
    with httpx.Client(base_url=url, timeout=10) as c:
        orders = [
            {
                "key": f"order-{n}",
                "value": {
                    "id": n,
                    "customer": name,
                    "status": status,
                    "items": [{"sku": sku, "qty": qty, "price": price}],
                    "total": round(qty * price, 2),
                    "paid": status != "new",
                    "note": None,
                },
            }
            for n, name, status, sku, qty, price in [
                (1040, "Ada", "shipped", "MUG-01", 2, 9.5),
                (1041, "Grace", "paid", "TEE-M", 1, 19.0),
                (1042, "Linus", "paid", "BOOK-7", 3, 12.25),
                (1043, "Barbara", "new", "PEN-3", 10, 1.2),
            ]
        ]
        c.post("/v1.0/state/statestore", json=orders).raise_for_status()
        c.post(
            "/v1.0/state/statestore",
            json=[{"key": "session-9f3c", "value": {"user": "ada", "cart": ["MUG-01"]}, "metadata": {"ttlInSeconds": "1800"}}],
        ).raise_for_status()
        c.post("/v1.0/state/statestore", json=[{"key": "counter", "value": 1043}]).raise_for_status()
        raw = [
            ("inventory||MUG-01", {"value": {"stock": 118, "warehouse": "east"}}),
            ("inventory||TEE-M", {"value": {"stock": 7, "warehouse": "west"}}),
            ("inventory||BOOK-7", {"value": {"stock": 0, "warehouse": "east", "backorder": True}}),
            (
                "inventory||thumbnail-MUG-01",
                {"value": base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode(), "contentType": "application/octet-stream"},
            ),
        ]
        for key, body in raw:
            c.put(f"/devinit/v1/stores/statestore/keys/{quote(key, safe='')}", json=body).raise_for_status()


def take(out: Path, views: list[str], dark: bool = False, size: tuple[int, int] = (1280, 800)) -> list[Path]:
    """Serve, seed, and save ``inspector-<view>.png`` for each view into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="devinit-shot-") as tmp:
        folder = Path(tmp) / "components"
        write_component(folder, "statestore", "state.in-memory")
        srv = DevinitServer(folder, "--app-id", "checkout")
        try:
            seed(srv.url)
            browser = Browser()
            driver = browser.driver
            try:
                driver.execute_cdp_cmd(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
                )
                if dark:
                    driver.execute_cdp_cmd(
                        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
                    )
                saved = []
                for name in views:
                    fragment, ready = VIEWS[name]
                    driver.get(f"{srv.url}/ui/{fragment}")
                    _wait(lambda r=ready: driver.find_elements("css selector", r), f"the {name} view")  # type: ignore[misc]
                    time.sleep(0.3)  # let the last row's fade-in end
                    path = out / f"inspector-{name}{'-dark' if dark else ''}.png"
                    driver.save_screenshot(str(path))
                    saved.append(path)
                errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
                if errors:
                    raise RuntimeError(f"the page logged errors: {errors}")
                return saved
            finally:
                browser.quit()
        finally:
            srv.stop()


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNGs [docs/]")
    p.add_argument("--views", default="keys,key", help=f"comma-separated, of {', '.join(VIEWS)}")
    p.add_argument("--dark", action="store_true", help="the dark theme")
    args = p.parse_args()
    for path in take(args.out, [v for v in args.views.split(",") if v], args.dark):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
