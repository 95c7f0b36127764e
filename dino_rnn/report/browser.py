"""A page in a real browser: headless Chromium, driven over the DevTools protocol on a pipe.

Used by ``dino-rnn report --screenshot`` and by the tests. :func:`open_page` loads a local
HTML file at a given window width and returns what a person would notice: a screenshot, the
console errors and uncaught exceptions, every image that failed to load, any request that
left the disk, the tables, and whether the page is wider than the window.

The browser is Debian's ``chromium`` (or ``DINO_RNN_CHROMIUM``, or any Chromium or Chrome on
the PATH). It talks over file descriptors 3 and 4 (``--remote-debugging-pipe``): no port, no
network, nothing but the standard library.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-pipe",
]
# What the page is asked once it has loaded (no script of the page itself runs this).
PROBE = """(() => {
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


def _high(fd: int) -> int:
    """``fd`` moved to 10 or above (close-on-exec), so that moving it to 3 or 4 in the child clobbers nothing."""
    import fcntl

    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class BrowserUnavailable(RuntimeError):
    """No Chromium to run (the message says why)."""


def find_chromium() -> str:
    """The Chromium executable, or :class:`BrowserUnavailable` saying what was looked for."""
    env = os.environ.get("DINO_RNN_CHROMIUM")
    if env:
        if shutil.which(env):
            return shutil.which(env)
        raise BrowserUnavailable(f"DINO_RNN_CHROMIUM={env!r} is not an executable")
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserUnavailable(
        f"no Chromium found (looked for {', '.join(CANDIDATES)} on the PATH); "
        "install Debian's chromium package (apt-get install chromium) or set DINO_RNN_CHROMIUM")


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


class _Pipe:
    """The DevTools protocol over Chromium's pipe: one JSON message per NUL-terminated chunk."""

    def __init__(self, proc, to_browser: int, from_browser: int):
        self.proc, self.w, self.r = proc, to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the browser did not answer in time")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise BrowserUnavailable(f"the browser closed its pipe (exit status {self.proc.poll()})")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for i, m in enumerate(self.events):
            if m.get("method") == method:
                return self.events.pop(i)
        while True:
            m = self._read(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)


class Browser:
    """One headless Chromium, for several pages; use as a context manager."""

    def __init__(self, executable: str | None = None):
        self.executable = executable or find_chromium()
        self.profile = tempfile.mkdtemp(prefix="dino-rnn-chromium-")
        to_r, to_w = map(_high, os.pipe())  # we write commands to to_w; the browser reads them on fd 3
        from_r, from_w = map(_high, os.pipe())  # the browser writes on fd 4; we read from_r

        def child_fds():  # in the child: its ends of the pipes as fds 3 and 4 (dup2 makes them inheritable)
            os.dup2(to_r, 3)
            os.dup2(from_w, 4)

        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
                preexec_fn=child_fds, close_fds=False,
            )
        except OSError as e:
            shutil.rmtree(self.profile, ignore_errors=True)
            raise BrowserUnavailable(f"cannot start {self.executable}: {e}") from None
        os.close(to_r)
        os.close(from_w)
        self.pipe = _Pipe(self.proc, to_w, from_r)
        try:
            self.pipe.call("Browser.getVersion", timeout=60)
        except (TimeoutError, BrowserUnavailable) as e:
            self.close()
            raise BrowserUnavailable(f"{self.executable} did not start: {e}; {self._stderr_tail()}") from None

    def _stderr_tail(self) -> str:
        try:
            self.stderr.seek(0)
            return self.stderr.read().decode(errors="replace").strip().splitlines()[-1:][0]
        except (OSError, IndexError):
            return "no message"

    def open(self, path, width: int, height: int = 900, mobile: bool = False, full_page: bool = True) -> Page:
        """Load ``path`` (a local file) at ``width`` × ``height`` CSS pixels; see :class:`Page`."""
        url = Path(path).resolve().as_uri()
        p = self.pipe
        target = p.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = p.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                p.call(f"{domain}.enable", session=session)
            p.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                           "mobile": mobile}, session=session)
            p.events.clear()
            p.call("Page.navigate", {"url": url}, session=session)
            p.wait_for("Page.loadEventFired", timeout=60)
            page = Page(width=width)
            probe = p.call("Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session=session)
            page.probe = json.loads(probe["result"]["value"])
            shot = {"format": "png", "captureBeyondViewport": full_page}
            if full_page:
                shot["clip"] = {"x": 0, "y": 0, "width": width, "height": max(height, page.probe["height"]), "scale": 1}
            page.png = base64.b64decode(p.call("Page.captureScreenshot", shot, session=session, timeout=60)["data"])
            for m in p.events:
                method, params = m.get("method"), m.get("params", {})
                if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    page.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
                elif method == "Runtime.exceptionThrown":
                    d = params.get("exceptionDetails", {})
                    page.console_errors.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
                elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                    e = params["entry"]
                    page.console_errors.append(f"{e.get('text')} {e.get('url', '')}".strip())
                elif method == "Network.requestWillBeSent":
                    page.requests.append(params.get("request", {}).get("url", ""))
                elif method == "Network.loadingFailed":
                    page.failed.append(f"{params.get('errorText')} ({params.get('type')})")
            return page
        finally:
            p.call("Target.closeTarget", {"targetId": target})

    def close(self) -> None:
        try:
            os.close(self.pipe.w)
        except (AttributeError, OSError):
            pass
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.close(self.pipe.r)
        except (AttributeError, OSError):
            pass
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

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
