"""The inspector page (/ui/) in a real headless Chromium against a real `devinit serve`: the list,
a key, an edit that meets a stale etag, delete, create, the live feed, the token (typed, or traded
for devinit ui's ticket), narrow and dark windows. Each test also checks the console stayed clean (a CSP violation would show there).
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import grpc
import httpx
import pytest
from dapr.proto import api_v1
from dapr.proto.runtime.v1 import dapr_pb2_grpc
from selenium.webdriver.common.by import By

from browser import Browser, browser  # noqa: F401 - the fixture
from support import DevinitServer, write_component

R = "/devinit/v1/"
T = TypeVar("T")


@pytest.fixture
def driver(browser: Browser) -> Iterator[Any]:
    """The session's Chromium at 1280x800, light; put back as it was after the test."""
    d = browser.driver
    d.get_log("browser")  # what earlier tests left in the console
    set_viewport(d, 1280, 800)
    yield d
    d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    try:
        d.execute_script("localStorage.clear(); sessionStorage.clear()")  # the theme, the token
    except Exception:  # not on a page of ours: nothing of ours to clear
        pass


def set_viewport(d: Any, width: int, height: int) -> None:
    """The page's viewport, exactly (a window size in headless mode is not)."""
    d.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    )


def wait_for(check: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Poll ``check`` until it returns something truthy (exceptions count as not yet); fail saying ``what``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # the page is still drawing: an element not there yet, or replaced
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last!r})" if last else ""))
        time.sleep(0.05)


def console_errors(d: Any) -> list[str]:
    """The page's console errors (CSP violations, uncaught exceptions). An HTTP error status the
    page asked for and handled (a 409 on a stale etag) is logged too; those are left out."""
    return [
        e["message"]
        for e in d.get_log("browser")
        if e.get("level") == "SEVERE" and "the server responded with a status of" not in e["message"]
    ]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevinitServer]:
    folder = tmp_path_factory.mktemp("ui") / "components"
    write_component(folder, "statestore", "state.in-memory")
    s = DevinitServer(folder, "--app-id", "alpha")
    yield s
    s.stop()


@pytest.fixture
def api(srv: DevinitServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


def q(key: str) -> str:
    return quote(key, safe="")


def raw_put(api: httpx.Client, key: str, body: dict) -> dict:
    r = api.put(f"{R}stores/statestore/keys/{q(key)}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def raw_get(api: httpx.Client, key: str) -> httpx.Response:
    return api.get(f"{R}stores/statestore/keys/{q(key)}")


def open_page(driver: Any, srv: DevinitServer, fragment: str) -> None:
    driver.get(f"{srv.url}/ui/{fragment}")


def el(driver: Any, css: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, css)


def els(driver: Any, css: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, css)


def clean_console(driver: Any) -> None:
    errors = console_errors(driver)
    assert errors == [], errors


def test_list_grouped_by_app_id_then_a_key_and_its_url(driver: Any, srv: DevinitServer, api: httpx.Client, tag: str):
    for i in range(3):
        assert (
            api.post(
                "/v1.0/state/statestore", json=[{"key": f"{tag}-order-{i}", "value": {"qty": i, "ok": True, "note": None}}]
            ).status_code
            == 204
        )
    raw_put(api, f"beta||{tag}-cart", {"value": {"items": ["a"]}})
    open_page(driver, srv, "#/statestore?prefix=")
    rows = wait_for(lambda: [r for r in els(driver, "tr.key-row") if tag in r.get_attribute("data-key")], "the key rows")
    assert {r.get_attribute("data-key") for r in rows} >= {f"alpha||{tag}-order-0", f"beta||{tag}-cart"}
    groups = [g.get_attribute("data-app-id") for g in els(driver, "tr.group")]
    assert "alpha" in groups and "beta" in groups
    assert el(driver, "#store-list .health.up")  # the store's health in the side bar
    # filter by prefix: the URL follows, only that app's keys stay
    box = el(driver, "#prefix")
    box.send_keys(f"beta||{tag}")
    wait_for(
        lambda: (
            "prefix=beta" in driver.current_url
            and [r.get_attribute("data-key") for r in els(driver, "tr.key-row")] == [f"beta||{tag}-cart"]
        ),
        "the filtered list",
    )
    # open a key: its own URL, the value pretty and coloured, the etag
    open_page(driver, srv, f"#/statestore?prefix={q('alpha||' + tag)}")
    link = wait_for(lambda: el(driver, f'tr.key-row[data-key="alpha||{tag}-order-1"] a'), "the key link")
    link.click()
    wait_for(lambda: el(driver, "#value .j-key"), "the coloured JSON value")
    assert driver.current_url.endswith(f"#/statestore/{q('alpha||' + tag + '-order-1')}")
    text = el(driver, "#value").text
    assert '"qty": 1' in text and '"ok": true' in text and '"note": null' in text
    etag = api.get(f"/v1.0/state/statestore/{tag}-order-1").headers["etag"]
    assert el(driver, "#etag").text == etag
    assert el(driver, "#ttl").text == "no expiry"
    # the URL survives a reload
    driver.refresh()
    wait_for(lambda: el(driver, "#etag").text == etag, "the same key after a reload")
    assert el(driver, "#key-name").text == f"alpha||{tag}-order-1"
    clean_console(driver)


def test_edit_with_a_stale_etag_is_refused_and_reloads(driver: Any, srv: DevinitServer, api: httpx.Client, tag: str):
    key = f"alpha||{tag}-doc"
    raw_put(api, key, {"value": {"v": "mine"}})
    open_page(driver, srv, f"#/statestore/{q(key)}")
    wait_for(lambda: el(driver, "#edit"), "the Edit button").click()
    editor = wait_for(lambda: el(driver, "#editor"), "the editor")
    assert '"v": "mine"' in editor.get_attribute("value")
    editor.clear()
    editor.send_keys('{"v": "from the page"}')
    # meanwhile another client writes the key
    assert api.post("/v1.0/state/statestore", json=[{"key": f"{tag}-doc", "value": {"v": "theirs"}}]).status_code == 204
    el(driver, "#save").click()
    note = wait_for(lambda: el(driver, "#note-conflict"), "the conflict message")
    assert "changed since you opened it" in note.text
    assert raw_get(api, key).json()["value"] == {"v": "theirs"}  # not overwritten
    el(driver, "#conflict-reload").click()
    current = raw_get(api, key).json()["etag"]
    warn = wait_for(lambda: el(driver, "#note-warn"), "the reloaded note")
    assert current in warn.text
    assert el(driver, "#editor").get_attribute("value") == '{"v": "from the page"}'  # the user's text kept
    el(driver, "#save").click()  # now knowingly over the current etag
    wait_for(lambda: el(driver, "#note-ok"), "saved")
    assert raw_get(api, key).json()["value"] == {"v": "from the page"}
    wait_for(lambda: '"from the page"' in el(driver, "#value").text, "the saved value shown")
    clean_console(driver)


def test_delete_asks_first(driver: Any, srv: DevinitServer, api: httpx.Client, tag: str):
    key = f"alpha||{tag}-gone"
    raw_put(api, key, {"value": 1})
    open_page(driver, srv, f"#/statestore/{q(key)}")
    wait_for(lambda: el(driver, "#delete"), "the Delete button").click()
    dialog = wait_for(lambda: el(driver, "#confirm-dialog[open]"), "the confirmation")
    assert key in dialog.text
    el(driver, "#confirm-cancel").click()
    wait_for(lambda: not els(driver, "#confirm-dialog[open]"), "the dialog closed")
    assert raw_get(api, key).status_code == 200  # cancel keeps it
    el(driver, "#delete").click()
    wait_for(lambda: el(driver, "#confirm-dialog[open]"), "the confirmation again")
    el(driver, "#confirm-ok").click()
    flash = wait_for(lambda: el(driver, "#flash"), "the list with a message")
    assert f"Deleted {key}" in flash.text
    assert "#/statestore?prefix=alpha" in driver.current_url
    assert raw_get(api, key).status_code == 404
    clean_console(driver)


def test_create_a_key_never_over_an_existing_one(driver: Any, srv: DevinitServer, api: httpx.Client, tag: str):
    open_page(driver, srv, f"#/statestore?prefix={q('beta||')}")
    wait_for(lambda: el(driver, "#new-key"), "the New key button").click()
    name = wait_for(lambda: el(driver, "#new-key-name"), "the create form")
    assert name.get_attribute("value") == "beta||"
    name.send_keys(f"{tag}-new")
    el(driver, "#new-key-value").send_keys('{"created": 12345678901234567890}')
    el(driver, "#new-key-ttl").send_keys("3600")
    el(driver, "#create").click()
    wait_for(lambda: el(driver, "#value .j-num"), "the new key's view")
    got = raw_get(api, f"beta||{tag}-new").json()
    assert got["value"] == {"created": 12345678901234567890}  # big numbers go through exact
    assert 3000 < got["expireAt"] - got["now"] <= 3600
    assert "12345678901234567890" in el(driver, "#value").text
    # again under the same name: refused, nothing changed
    open_page(driver, srv, f"#/statestore?new&prefix={q('beta||' + tag + '-new')}")
    wait_for(lambda: el(driver, "#new-key-value"), "the create form").send_keys("2")
    el(driver, "#create").click()
    error = wait_for(lambda: el(driver, ".note.error"), "the exists message")
    assert "exists already" in error.text
    assert raw_get(api, f"beta||{tag}-new").json()["value"] == {"created": 12345678901234567890}
    clean_console(driver)


def test_binary_value_as_hex_and_ttl_counting_down(driver: Any, srv: DevinitServer, api: httpx.Client, tag: str):
    key = f"alpha||{tag}-bin"
    raw_put(
        api,
        key,
        {"value": base64.b64encode(b"\x00\x01devinit\xff").decode(), "contentType": "application/octet-stream", "ttl": 600},
    )
    open_page(driver, srv, f"#/statestore/{q(key)}")
    box = wait_for(lambda: el(driver, "#value.hex"), "the hex dump")
    assert "00 01 64 65 76 69 6e 69 74 ff" in box.text and "|..devinit.|" in box.text
    assert el(driver, "#kind").text == "binary"
    first = el(driver, "#ttl").text
    assert re.fullmatch(r"\d+m \d\ds", first), first  # 600 s, counting down
    wait_for(lambda: el(driver, "#ttl").text != first, "the TTL to count down")
    clean_console(driver)


def test_live_feed_shows_calls_from_other_clients(driver: Any, srv: DevinitServer, api: httpx.Client, tag: str):
    open_page(driver, srv, "#/~feed")
    wait_for(lambda: "Live" in el(driver, "#feed-status").text, "the feed to connect")
    assert api.post("/v1.0/state/statestore", json=[{"key": f"{tag}-fed", "value": 1}]).status_code == 204
    with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
        dapr_pb2_grpc.DaprStub(ch).GetState(api_v1.GetStateRequest(store_name="statestore", key=f"{tag}-fed"))

    def two_rows() -> list[Any] | None:
        rows = [r for r in els(driver, "tr.feed-row") if r.get_attribute("data-key") == f"{tag}-fed"]
        return rows if len(rows) >= 2 else None

    rows = wait_for(two_rows, "two feed rows")
    texts = [r.text for r in rows]  # newest first
    assert "gRPC" in texts[0] and "get" in texts[0] and "OK" in texts[0]
    assert "HTTP" in texts[1] and "save" in texts[1] and "204" in texts[1] and "alpha" in texts[1]
    rows[1].find_element(By.CSS_SELECTOR, "td.key a").click()  # a feed row links to its key
    wait_for(lambda: el(driver, "#key-name").text == f"alpha||{tag}-fed", "the key from the feed")
    clean_console(driver)


def test_token_typed_or_from_a_ticket(driver: Any, tmp_path: Path):
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    s = DevinitServer(folder, env={"DAPR_API_TOKEN": "s3cret"})

    def ticket() -> str:  # as devinit ui asks for one
        r = httpx.post(s.url + R + "tickets", headers={"dapr-api-token": "s3cret"})
        assert r.status_code == 200, r.text
        return str(r.json()["ticket"])

    def dialog_says(words: str) -> str:
        wait_for(lambda: el(driver, "#token-dialog[open]"), "the token dialog")
        text = str(el(driver, "#token-text").text)
        assert words in text, text
        return text

    try:
        open_page(driver, s, "")
        wait_for(lambda: el(driver, "#token-dialog[open]"), "the token dialog")
        el(driver, "#token-input").send_keys("s3cret")
        el(driver, "#token-ok").click()
        wait_for(lambda: not els(driver, "#token-dialog[open]") and el(driver, '.card[data-store="statestore"]'), "the stores")
        driver.execute_script("sessionStorage.clear()")
        # devinit ui's way: a ticket in the fragment, traded for the token, taken off the URL at once
        first = ticket()
        open_page(driver, s, f"#ticket={first}&/statestore")
        wait_for(lambda: el(driver, "#prefix"), "the store's keys, signed in by the ticket")
        assert first not in driver.current_url and driver.current_url.endswith("/ui/#/statestore")
        assert driver.execute_script("return sessionStorage.getItem('devinit.token')") == "s3cret"
        assert not els(driver, "#token-dialog[open]")
        clean_console(driver)
        # the same ticket again (someone else was first): said plainly, and the token asked for
        driver.execute_script("sessionStorage.clear()")
        open_page(driver, s, f"#ticket={first}")
        dialog_says("used already, by someone else")
        assert "Restart the server with a new DAPR_API_TOKEN" in el(driver, "#token-text").text
        assert first not in driver.current_url
        el(driver, "#token-input").send_keys("s3cret")
        el(driver, "#token-ok").click()
        wait_for(lambda: not els(driver, "#token-dialog[open]") and el(driver, '.card[data-store="statestore"]'), "the stores")
        # a ticket redeemed elsewhere first, while this tab is open: the same warning
        driver.execute_script("sessionStorage.clear()")
        stolen = ticket()
        assert httpx.post(s.url + R + "tickets/redeem", json={"ticket": stolen}).status_code == 200
        open_page(driver, s, f"#ticket={stolen}")
        dialog_says("used already, by someone else")
        # a ticket nobody gave out
        driver.execute_script("sessionStorage.clear()")
        open_page(driver, s, "#ticket=not-a-ticket")
        dialog_says("unknown or expired")
        assert "not-a-ticket" not in driver.current_url
        # the refused redeem calls (403) are the page's own, handled: nothing else in the console
        clean_console(driver)
    finally:
        s.stop()


def test_narrow_and_dark(driver: Any, srv: DevinitServer, api: httpx.Client, tag: str):
    raw_put(api, f"alpha||{tag}-n", {"value": {"narrow": True}})
    open_page(driver, srv, f"#/statestore?prefix={q('alpha||' + tag)}")
    wait_for(lambda: els(driver, "tr.key-row"), "the list")
    light = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    set_viewport(driver, 400, 800)
    dark = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert luminance(light) > 0.8 and luminance(dark) < 0.2, (light, dark)
    for fragment in (f"#/statestore?prefix={q('alpha||' + tag)}", f"#/statestore/{q('alpha||' + tag + '-n')}", "#/~feed", "#/"):
        open_page(driver, srv, fragment)
        wait_for(lambda: not els(driver, "main > p.muted:only-child"), f"{fragment} drawn")
        wide = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{fragment} scrolls sideways by {wide}px at 400px"
    # the theme button overrides the system: light, then dark, then auto again
    el(driver, "#theme").click()
    assert luminance(driver.execute_script("return getComputedStyle(document.body).backgroundColor")) > 0.8
    clean_console(driver)


def luminance(css: str) -> float:
    r, g, b = (int(x) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def test_readme_screenshots_come_from_the_script(tmp_path: Path):
    """scripts/inspector_screenshot.py (which made docs/inspector-*.png) still runs: PNGs of 1280x800."""
    import importlib.util
    import struct

    spec = importlib.util.spec_from_file_location(
        "inspector_screenshot", Path(__file__).parents[1] / "scripts" / "inspector_screenshot.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    paths = script.take(tmp_path, ["keys", "key"], dark=True)
    assert [p.name for p in paths] == ["inspector-keys-dark.png", "inspector-key-dark.png"]
    for p in paths:
        head = p.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1280, 800)
