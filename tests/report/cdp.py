"""A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (stdlib only).

Chromium reads NUL-terminated JSON commands from fd 3 and writes replies/events to fd 4, so no
port, no websocket library and no network are involved. Used by the report test to load the HTML
report in headless Chromium, click through it, check that its images decoded and take screenshots.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Flags for a closed network and a root CI container (see the report test's docstring).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--no-default-browser-check",
    "--remote-debugging-pipe",
]


class CDPError(RuntimeError):
    pass


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, binary: str, width: int = 1400, height: int = 900, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="u2seg-chromium-")
        # parent -> chromium (its fd 3), chromium -> parent (its fd 4); moved to high fds so the
        # shell redirections below cannot clobber each other (bash: dash cannot redirect fds > 9).
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        hi_cmd_r = os.dup2(cmd_r, 203)
        hi_res_w = os.dup2(res_w, 204)
        os.close(cmd_r)
        os.close(res_w)
        self._w = cmd_w
        self._r = res_r
        self.log_path = Path(self.profile) / "chromium.log"
        self._log = open(self.log_path, "wb")
        argv = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", 'exec "$0" "$@" 3<&203 4>&204 203<&- 204>&-', *argv],
            pass_fds=(hi_cmd_r, hi_res_w), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT)
        os.close(hi_cmd_r)
        os.close(hi_res_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.session: str | None = None
        try:
            self.version = self.send("Browser.getVersion", session=False)
            target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                     session=False)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except Exception:
            self.close()
            raise

    # ---------------------------------------------------------------- transport
    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._r, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._cond:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, session: bool = True,
             timeout: float | None = None) -> dict[str, Any]:
        with self._cond:
            self._next_id += 1
            msg_id = self._next_id
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while msg_id not in self._replies:
                if self._closed:
                    raise CDPError(f"chromium closed the pipe during {method}; log: {self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CDPError(f"no reply to {method} within {timeout or self.timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # ---------------------------------------------------------------- page helpers
    def wait_event(self, method: str, since: int = 0, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while True:
                for ev in self.events[since:]:
                    if ev.get("method") == method:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CDPError(f"no {method} event within {timeout or self.timeout} s")
                self._cond.wait(left)

    def navigate(self, url: str, timeout: float | None = None) -> None:
        mark = len(self.events)
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        self.wait_event("Page.loadEventFired", since=mark, timeout=timeout)

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """Value of a JS expression (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"JS exception: {text}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None, interval: float = 0.1) -> Any:
        """Poll a JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise CDPError(f"timed out waiting for `{expression}` (last value {value!r})")

    def screenshot(self, path: str | Path, full_page: bool = False) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = base64.b64decode(self.send("Page.captureScreenshot", params)["data"])
        Path(path).write_bytes(data)
        return data

    def exceptions(self) -> list[str]:
        """Uncaught JS exceptions and console errors seen so far."""
        out = []
        with self._cond:
            events = list(self.events)
        for ev in events:
            if ev.get("method") == "Runtime.exceptionThrown":
                d = ev["params"]["exceptionDetails"]
                out.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
            elif ev.get("method") == "Runtime.consoleAPICalled" and ev["params"].get("type") == "error":
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in ev["params"]["args"]))
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("Browser.close", session=False, timeout=10)
            except Exception:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
