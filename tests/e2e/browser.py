"""A real headless Chromium (Debian's chromium and chromium-driver, driven
through WebDriver by selenium) for the console tests.

Nothing is downloaded: the driver and the browser are the Debian binaries.
Waits are readiness waits on the page (an element appears), never sleeps.
With ``CHORUS_SCREENSHOTS=DIR`` in the environment, ``shot(name)`` saves
the page as DIR/name.png (``bash scripts/console-screenshots`` uses this to
refresh the pictures in docs/console/)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 20.0
COOKIE = "__Host-chorus-console"


def available() -> bool:
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


class Browser:
    def __init__(self, base: str, downloads: Path, width: int = 1280, height: int = 900):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.base = base
        self.downloads = downloads
        downloads.mkdir(parents=True, exist_ok=True)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  f"--window-size={width},{height}", "--lang=en-US", "--no-first-run",
                  "--disable-extensions", "--disable-background-networking"):
            opts.add_argument(a)
        # The nodes present the test CA's certificate.
        opts.accept_insecure_certs = True
        opts.add_experimental_option("prefs", {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
        })
        env = dict(os.environ, SE_OFFLINE="true", TZ="Asia/Tokyo")
        service = Service(executable_path=CHROMEDRIVER, env=env)
        self.d = webdriver.Chrome(service=service, options=opts)
        self.d.set_page_load_timeout(WAIT_S)

    # ---------------------------------------------------------------- pages
    def go(self, path: str) -> None:
        self.d.get(self.base + path)

    @property
    def path(self) -> str:
        return self.d.current_url[len(self.base):] if self.d.current_url.startswith(self.base) \
            else self.d.current_url

    def text(self) -> str:
        return self.d.find_element("tag name", "body").text

    def wait(self, css: str, text: str | None = None, timeout: float = WAIT_S):
        """Waits until an element matching ``css`` (containing ``text``) is on
        the page; returns it."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        def found(d):
            for el in d.find_elements("css selector", css):
                if text is None or text in el.text:
                    return el
            return False
        try:
            # (An element read while the next page loads goes stale: look again.)
            return WebDriverWait(self.d, timeout, poll_frequency=0.1,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(found)
        except Exception as e:
            raise AssertionError(f"no {css!r} with {text!r} on {self.d.current_url}:\n"
                                 f"{self.text()[:2000]}") from e

    def fill(self, form_css: str, **fields: str) -> None:
        form = self.d.find_element("css selector", form_css)
        for name, value in fields.items():
            el = form.find_element("css selector", f"[name={name}]")
            el.clear()
            el.send_keys(value)

    def submit(self, form_css: str) -> None:
        self.d.find_element("css selector", f"{form_css} button[type=submit]").click()

    def accept_confirm(self) -> None:
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait
        WebDriverWait(self.d, WAIT_S).until(ec.alert_is_present()).accept()

    def sign_in(self, user: str = "", password: str = "", token: str = "",
                expect_ok: bool = True) -> None:
        self.go("/console/login")
        self.wait("form[action='/console/login']")
        fields = {k: v for k, v in (("user", user), ("password", password), ("token", token)) if v}
        self.fill("form[action='/console/login']", **fields)
        self.submit("form[action='/console/login']")
        if expect_ok:
            self.wait("nav .who")

    def session_cookie(self) -> dict | None:
        return next((c for c in self.d.get_cookies() if c["name"] == COOKIE), None)

    def shot(self, name: str) -> None:
        out = os.environ.get("CHORUS_SCREENSHOTS")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            self.d.save_screenshot(str(Path(out) / f"{name}.png"))

    def downloaded(self, suffix: str, timeout: float = WAIT_S) -> Path:
        """The finished download ending in ``suffix`` (Chromium writes
        .crdownload until it is complete)."""
        deadline = time.monotonic() + timeout
        while True:
            done = [p for p in self.downloads.iterdir() if p.name.endswith(suffix)]
            if done:
                return done[0]
            if time.monotonic() >= deadline:
                raise AssertionError(f"nothing ending in {suffix} in {list(self.downloads.iterdir())}")
            time.sleep(0.1)

    def close(self) -> None:
        try:
            self.d.quit()
        except Exception:
            pass


@pytest.fixture
def browser_for(tmp_path):
    """``browser_for(node)`` opens a browser on a node's console; every
    browser opened is closed after the test."""
    if not available():
        pytest.fail("chromium and chromedriver are required (scripts/deps installs them)")
    opened: list[Browser] = []

    def make(node, name: str = "b") -> Browser:
        b = Browser(node.http_base, tmp_path / f"downloads-{name}")
        opened.append(b)
        return b
    yield make
    for b in opened:
        b.close()
