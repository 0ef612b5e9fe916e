"""Open a page in headless Chromium and report what a user's browser would see.

Chromium is driven through the Chrome DevTools protocol over a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes on file descriptors 3 and 4), so no websocket library and
no network port are needed. :func:`inspect_page` loads a file and returns its console errors,
uncaught exceptions, failed loads, every request's URL and the state of every image.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """``$KLAYER_CHROMIUM``, else the first Chromium or Chrome on the PATH."""
    env = os.environ.get("KLAYER_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class _Pipe:
    def __init__(self, exe: str, profile: str):
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # keep the child's ends above 10, so that moving them to 3 and 4 cannot clobber each other
        hi_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def child_fds():
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        args = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # the CDP pipe is fds 3 and 4 of the child
            preexec_fn=child_fds,
        )
        os.close(hi_r)
        os.close(hi_w)
        self.w, self.r = to_chrome_w, from_chrome_r
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params=None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self.receive(timeout)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def receive(self, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while b"\0" not in self.buf:
            import select

            left = end - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def wait_for(self, method: str, session: str, timeout: float = 60) -> dict:
        for m in self.events:
            if m.get("method") == method and m.get("sessionId") == session:
                return m
        end = time.monotonic() + timeout
        while True:
            m = self.receive(max(0.1, end - time.monotonic()))
            self.events.append(m)
            if m.get("method") == method and m.get("sessionId") == session:
                return m

    def close(self):
        try:
            os.write(self.w, json.dumps({"id": 10**6, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self.w)
            os.close(self.r)


IMAGES_JS = """JSON.stringify({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
                                                width: i.naturalWidth, height: i.naturalHeight})),
  anchors: Array.from(document.querySelectorAll('a[href^="#"]')).map(a => a.getAttribute('href')),
  missing: Array.from(document.querySelectorAll('a[href^="#"]'))
             .map(a => a.getAttribute('href').slice(1)).filter(id => !document.getElementById(id)),
  details: Array.from(document.querySelectorAll('details')).map(d => d.open),
  title: document.title,
  text: document.body ? document.body.innerText.slice(0, 2000) : ''
})"""


def inspect_page(path, exe: str | None = None, settle: float = 0.5) -> dict:
    """Load ``path`` in headless Chromium and return what happened.

    Returns
    -------
    dict ``errors`` (console errors, uncaught exceptions and error log entries, as text),
    ``requests`` (every URL the page asked for), ``images`` (``alt, complete, width, height``
    each), ``anchors``, ``missing`` (in-page links whose target id does not exist), ``details``
    (the open state of every ``<details>``), ``title`` and the start of the page's ``text``.
    """
    exe = exe or find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium")
    with tempfile.TemporaryDirectory(prefix="klayer-chromium-") as profile:
        b = _Pipe(exe, profile)
        try:
            target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page", "Network"):
                b.send(f"{domain}.enable", session=s)
            b.events.clear()
            b.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=s)
            b.wait_for("Page.loadEventFired", s)
            time.sleep(settle)
            state = json.loads(
                b.send("Runtime.evaluate", {"expression": IMAGES_JS, "returnByValue": True}, session=s)["result"][
                    "value"
                ]
            )
            b.send("Runtime.evaluate", {"expression": "1"}, session=s)  # flush pending events
        finally:
            b.close()
    errors, requests = [], []
    for m in b.events:
        method, p = m.get("method"), m.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            requests.append(p["request"]["url"])
        elif method == "Network.loadingFailed":
            errors.append(f"failed load: {p.get('errorText')}")
    return {**state, "errors": errors, "requests": requests}
