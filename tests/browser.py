"""Headless Chromium driven through the Chrome DevTools Protocol over ``--remote-debugging-pipe``:
the standard library only (no websocket, no port), enough to open a page from disk, click it like
a user, read its DOM and take screenshots. ``find_chromium()`` is None where no browser is
installed (Debian's ``chromium`` package provides ``/usr/bin/chromium``)."""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

TIMEOUT_S = 30.0


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page. The DevTools messages go through the browser's pipe
    (it reads fd 3 and writes fd 4, NUL-terminated JSON), which ``sh`` wires to our stdin/stdout
    pipes before it execs the browser."""

    def __init__(self, binary: str, width: int = 1200, height: int = 900) -> None:
        self.width, self.height = width, height
        self._profile = tempfile.TemporaryDirectory(prefix="llmxmr-chromium-")
        self._log = open(Path(self._profile.name) / "stderr.log", "wb")  # closed in close()
        command = [
            "sh", "-c", 'exec "$@" 3<&0 4>&1 </dev/null >/dev/null', "sh", binary,
            "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", "--mute-audio", "--force-color-profile=srgb",
            f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        assert self._process.stdin is not None and self._process.stdout is not None
        self._out = self._process.stdout.fileno()
        os.set_blocking(self._out, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._out, selectors.EVENT_READ)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        try:
            targets = self.send("Target.getTargets", browser=True)["targetInfos"]
            page = next(t["targetId"] for t in targets if t["type"] == "page")
            self.session = self.send("Target.attachToTarget", {"targetId": page, "flatten": True}, browser=True)[
                "sessionId"
            ]
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.resize(width, height)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._write({"id": -1, "method": "Browser.close"})
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                stream.close()
        self._selector.close()
        self._log.close()
        self._profile.cleanup()

    def stderr(self) -> str:
        self._log.flush()
        return (Path(self._profile.name) / "stderr.log").read_text(errors="replace")[-2000:]

    # The protocol.

    def _write(self, message: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(message).encode() + b"\0")
        self._process.stdin.flush()

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer from Chromium in time; its stderr:\n{self.stderr()}")
            if self._selector.select(left):
                data = os.read(self._out, 1 << 20)
                if not data:
                    raise BrowserError(f"Chromium closed its pipe; its stderr:\n{self.stderr()}")
                self._buffer += data
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False, timeout: float = TIMEOUT_S
    ) -> dict[str, Any]:
        """A command's result (the page's, or the browser's); events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser:
            message["sessionId"] = self.session
        self._write(message)
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for n, seen in enumerate(self.events):
                if seen["method"] == event:
                    del self.events[: n + 1]
                    return seen.get("params", {})
            self.events.append(self._read(deadline))

    # What a test does with the page.

    def open(self, url: str) -> float:
        """Load ``url`` and wait for its load event (after its scripts ran); the seconds it took."""
        self.events.clear()
        started = time.perf_counter()
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")
        return time.perf_counter() - started

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able); a thrown error fails."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression[:80]}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def errors(self) -> list[dict[str, Any]]:
        """The page's uncaught exceptions and console errors so far."""
        return [
            e
            for e in self.events
            if e["method"] == "Runtime.exceptionThrown"
            or (e["method"] == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")
        ]

    def click(self, selector: str) -> None:
        """Scroll the element into view and click its middle with the mouse, as a user does: what
        lies on top of it there gets the click."""
        box = self.evaluate(
            f"(function () {{ var el = document.querySelector({json.dumps(selector)}); if (!el) return null;"
            " el.scrollIntoView({block: 'center', inline: 'center'}); var r = el.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        if box is None:
            raise BrowserError(f"nothing matches {selector}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})
        self.evaluate("new Promise(function (done) { requestAnimationFrame(function () { done(true); }); })")

    def resize(self, width: int, height: int) -> None:
        """The viewport's size in CSS pixels (one device pixel each)."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics)
        self.width, self.height = width, height

    def screenshot(self, path: Path, *, full_page: bool = False, top: float = 0, bottom: float | None = None) -> Path:
        """A PNG of the viewport; or of the whole page (``full_page``), or of its part between
        ``top`` and ``bottom`` (CSS pixels from the top of the page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page or bottom is not None:
            end = bottom if bottom is not None else self.send("Page.getLayoutMetrics")["cssContentSize"]["height"]
            params |= {
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": top, "width": self.width, "height": end - top, "scale": 1},
            }
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", params)["data"]))
        return path
