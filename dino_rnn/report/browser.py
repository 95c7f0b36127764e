"""A page in a real browser: headless Chromium, driven by Selenium through Debian's chromedriver.

Used by ``dino-rnn report --screenshot`` and by the tests. :meth:`Browser.open` loads a local
HTML file at a given window width and returns what a person would notice (a :class:`Page`): a
screenshot, the console errors and uncaught exceptions, every image that failed to load, any
request that left the disk, the tables, and whether the page is wider than the window.

The browser is Debian's ``chromium`` (or ``DINO_RNN_CHROMIUM``, or any Chromium or Chrome on
the PATH), driven by ``chromedriver`` (Debian's ``chromium-driver``; or ``DINO_RNN_CHROMEDRIVER``).
Both paths are given to Selenium, so Selenium Manager never runs and nothing is downloaded.
The window size, the full-page screenshot and the request log are Chromium's DevTools commands
and events, through Selenium's ``execute_cdp_cmd`` and ``goog:loggingPrefs``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
DRIVERS = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--disable-dev-shm-usage",
]
# What the page is asked once it has loaded (no script of the page itself runs this).
PROBE = """return (() => {
  const imgs = [...document.images];
  const doc = document.documentElement;
  return JSON.stringify({
    title: document.title,
    font: getComputedStyle(document.body).fontFamily,
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 80)),
    tables: document.querySelectorAll('table').length,
    rows: document.querySelectorAll('tbody tr').length,
    math: document.querySelectorAll('math').length,
    scripts: document.scripts.length,
    boxScrolls: [...document.querySelectorAll('.scroll')].map(e => e.scrollWidth > e.clientWidth + 1),
    width: window.innerWidth,
    scrollWidth: doc.scrollWidth,
    height: doc.scrollHeight,
    headings: [...document.querySelectorAll('h1, h2')].map(h => h.textContent.trim()),
    links: [...document.links].map(a => a.getAttribute('href')),
    tooWide: [...document.querySelectorAll('body *')].filter(e => {
      const r = e.getBoundingClientRect();
      return r.width > 0 && (r.right > window.innerWidth + 1 || r.left < -1)
        && !e.closest('.scroll, pre, .jp-OutputArea-output, table, math');
    }).slice(0, 5).map(e => e.tagName + (e.className ? '.' + String(e.className).split(' ')[0] : '')),
  });
})()"""


class BrowserUnavailable(RuntimeError):
    """No Chromium or no chromedriver to run (the message says why, in one line)."""


def _executable(variable: str, names) -> str | None:
    """``$variable`` if set (it must be an executable), else the first of ``names`` found."""
    env = os.environ.get(variable)
    if env:
        if shutil.which(env):
            return shutil.which(env)
        raise BrowserUnavailable(f"{variable}={env!r} is not an executable")
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


def find_chromium() -> str:
    """The Chromium executable, or :class:`BrowserUnavailable` saying what was looked for."""
    path = _executable("DINO_RNN_CHROMIUM", CANDIDATES)
    if path is None:
        raise BrowserUnavailable(
            f"no Chromium found (looked for {', '.join(CANDIDATES)} on the PATH); "
            "install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) "
            "or set DINO_RNN_CHROMIUM")
    return path


def find_chromedriver() -> str:
    """The chromedriver executable, or :class:`BrowserUnavailable` saying to install it."""
    path = _executable("DINO_RNN_CHROMEDRIVER", DRIVERS)
    if path is None:
        raise BrowserUnavailable("no chromedriver found on the PATH; install Debian's chromium-driver "
                                 "(apt-get install chromium-driver) or set DINO_RNN_CHROMEDRIVER")
    return path


@dataclass
class Page:
    """What a browser showed for one page at one window size."""

    width: int
    png: bytes = b""
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    failed: list[str] = field(default_factory=list)  # requests that failed
    probe: dict = field(default_factory=dict)

    @property
    def remote_requests(self) -> list[str]:
        """Requests that would leave the disk: anything but ``file:`` and inline ``data:`` URLs."""
        return [u for u in self.requests if not u.startswith(("file:", "data:", "about:"))]


def _options(chromium: str):
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    # the console (browser) and the DevTools events (performance: every request, every failure)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return options


def _network(page: Page, entries: list[dict]) -> None:
    """The requests and failed requests among chromedriver's performance log ``entries``."""
    for entry in entries:
        message = json.loads(entry["message"])["message"]
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            page.requests.append(params.get("request", {}).get("url", ""))
        elif method == "Network.loadingFailed":
            page.failed.append(f"{params.get('errorText')} ({params.get('type')})")


class Browser:
    """One headless Chromium under chromedriver, for several pages; use as a context manager."""

    def __init__(self, executable: str | None = None, driver: str | None = None):
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        self.executable = executable or find_chromium()
        self.driver_path = driver or find_chromedriver()
        try:  # an explicit driver path: Selenium Manager is never asked (it would try the network)
            self.driver = webdriver.Chrome(options=_options(self.executable), service=Service(self.driver_path))
        except WebDriverException as e:
            why = (e.msg or type(e).__name__).strip().splitlines()[0]
            raise BrowserUnavailable(f"{self.executable} did not start under {self.driver_path}: {why}") from None
        self.driver.set_page_load_timeout(60)

    def open(self, path, width: int, height: int = 900, mobile: bool = False, full_page: bool = True) -> Page:
        """Load ``path`` (a local file) at ``width`` × ``height`` CSS pixels; see :class:`Page`."""
        d = self.driver
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        for log in ("browser", "performance"):  # what earlier pages left
            d.get_log(log)
        d.get(Path(path).resolve().as_uri())
        page = Page(width=width, probe=json.loads(d.execute_script(PROBE)))
        page.console_errors = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
        _network(page, d.get_log("performance"))
        shot_height = max(height, page.probe["height"]) if full_page else height
        shot = d.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": full_page,
            "clip": {"x": 0, "y": 0, "width": width, "height": shot_height, "scale": 1}})
        page.png = base64.b64decode(shot["data"])
        return page

    def close(self) -> None:
        self.driver.quit()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def screenshot(path, dest, width: int = 1280, height: int = 1000) -> Page:
    """A screenshot of the top of the page (``width`` × ``height``) written to ``dest``."""
    from dino_rnn.files import atomic_path

    with Browser() as b:
        page = b.open(path, width, height, full_page=False)
    with atomic_path(dest) as tmp:
        Path(tmp).write_bytes(page.png)
    return page
