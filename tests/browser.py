"""A real headless Chromium for the tests that need a browser, and a server for their pages.

Selenium drives Debian's ``/usr/bin/chromium`` through its ``/usr/bin/chromedriver`` (nothing
is downloaded: both paths are given, so Selenium Manager never runs). Chosen over Playwright
because Playwright's Python package brings its own Node driver and expects browsers it
downloads itself; Selenium is one pure-Python package and speaks WebDriver to the browser the
machine has.

Use::

    from browser import Browser, Pages, browser, pages  # the fixtures (noqa: F401 where unused)

    def test_x(browser: Browser, pages: Pages) -> None:
        url = pages.add("app.html", "<html>...</html>")          # served on 127.0.0.1
        browser.open(url.replace("127.0.0.1", "evil.example"))   # the same page, another site
        status = browser.run_async("fetch(arguments[0]).then(r => done(r.status))", some_url)

Names under ``.example`` (``evil.example``, ``rebind.example``...) resolve to 127.0.0.1 in this
browser (``--host-resolver-rules``), so a page served locally can stand for a page of any
site, and a URL can reach a local server under a foreign name (DNS rebinding). Each
``run_async`` script gets ``done`` (call it with the result) and its arguments as
``arguments[0..]``. One browser per test session; ``reset()`` between tests.
"""

from __future__ import annotations

import http.server
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import need

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FOREIGN = "*.example"  # resolved to 127.0.0.1 by the browser


class Browser:
    """One headless Chromium with a fresh profile."""

    def __init__(self) -> None:
        need(shutil.which(CHROMIUM) is not None, f"{CHROMIUM} is needed for the browser tests (apt-get install chromium)")
        need(shutil.which(CHROMEDRIVER) is not None, f"{CHROMEDRIVER} is needed (apt-get install chromium-driver)")
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            need(False, "selenium is needed for the browser tests (pip install '.[test]')")
            raise
        self.profile = tempfile.mkdtemp(prefix="devinit-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={self.profile}",
            f"--host-resolver-rules=MAP {FOREIGN} 127.0.0.1",
        ):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_script_timeout(20)
        self.driver.set_page_load_timeout(20)

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait for it to load."""
        self.driver.get(url)

    def text(self) -> str:
        """The visible text of the page."""
        return str(self.driver.execute_script("return document.body ? document.body.innerText : ''"))

    def run_async(self, script: str, *args: Any) -> Any:
        """Run ``script`` in the page; it calls ``done(result)`` when finished."""
        return self.driver.execute_async_script("const done = arguments[arguments.length - 1];\n" + script, *args)

    def reset(self) -> None:
        """A blank page, no cookies: the next test starts clean."""
        self.driver.get("about:blank")
        self.driver.delete_all_cookies()

    def quit(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


class Pages:
    """A static HTTP server on 127.0.0.1 for test pages (``add`` returns the page's URL)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="devinit-pages-"))
        root = self.root

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, name: str, html: str) -> str:
        (self.root / name).write_text(html)
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.root, ignore_errors=True)


_shared: list[Browser] = []  # one Chromium for the session, started by the first test that asks


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Browser:
    """The session's Chromium, on a blank page (started on first use, quit at the end)."""
    if not _shared:
        _shared.append(Browser())
        request.config.add_cleanup(_shared[0].quit)
    _shared[0].reset()
    return _shared[0]


@pytest.fixture(scope="session")
def pages() -> Iterator[Pages]:
    p = Pages()
    yield p
    p.stop()
