"""Drive `srsalvage serve` from a real headless Chromium over the DevTools protocol.

    .venv/bin/python scripts/browser.py IMAGE [--png OUT.png]

No playwright: Chromium is started with --remote-debugging-port=0 (the port it picks is written
to DevToolsActivePort in its fresh profile directory) and spoken to over one websocket with
aiohttp, which textual-serve already depends on. Before the page loads, a script wraps the
page's WebSocket so that the terminal bytes the app sends (`rx`) and the keys the page sends
(`tx`) can be read back: the terminal itself draws on a canvas (xterm.js WebGL/canvas
renderers), which has no text to query.

Used by tests/test_serve_browser.py and scripts/screenshots.py (screenshots/serve-browser.png).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,860"]

# wraps WebSocket before textual.js runs: rx = terminal output, tx = what the page sent
CAPTURE = """
(() => {
  const Orig = window.WebSocket;
  const dec = new TextDecoder();
  window.__rx = []; window.__tx = [];
  function Wrapped(url, protocols) {
    const ws = protocols === undefined ? new Orig(url) : new Orig(url, protocols);
    ws.addEventListener('message', e => {
      if (typeof e.data !== 'string') window.__rx.push(dec.decode(e.data, {stream: true}));
    });
    const send = ws.send.bind(ws);
    ws.send = d => { window.__tx.push(String(d)); return send(d); };
    return ws;
  }
  Wrapped.prototype = Orig.prototype;
  Object.assign(Wrapped, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
  window.WebSocket = Wrapped;
})();
"""

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_][^\x1b]*\x1b\\|\x1b[@-Z\\-_]")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screen_text(rx: str) -> str:
    """The terminal output with escape sequences removed (text runs of one style stay whole)."""
    return ANSI.sub("", rx)


class Serve:
    """`srsalvage serve IMAGE` in a subprocess; `url` is the one-time URL it printed."""

    def __init__(self, image: str, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", image, "--port", str(self.port), *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=ROOT), start_new_session=True)
        self.url = ""
        self.banner = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"serve exited: {self.proc.stderr.read()}")
            self.banner += line
            m = re.search(r"(http://\S+\?token=\S+)", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            raise RuntimeError("serve printed no URL")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session, started above
                self.proc.wait()


class Chromium:
    """A headless Chromium with a fresh profile, spoken to over the DevTools protocol."""

    def __init__(self, binary: str | None = None) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise RuntimeError("chromium not installed")
        self.profile = tempfile.mkdtemp(prefix="srsalvage-chromium-")
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        marker = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while not (os.path.exists(marker) and open(marker).read().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        self.port = int(open(marker).read().split()[0])
        self._ws = None
        self._session = None
        self._next = 0
        self.events: list[dict] = []

    async def connect(self) -> None:
        import aiohttp
        self._session = aiohttp.ClientSession()
        for _ in range(100):
            async with self._session.get(f"http://127.0.0.1:{self.port}/json/list") as r:
                pages = [t for t in await r.json() if t.get("type") == "page"]
            if pages:
                break
            await asyncio.sleep(0.05)
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"],
                                                  max_msg_size=0)

    async def call(self, method: str, **params) -> dict:
        self._next += 1
        ident = self._next
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self._ws.receive_json(), 60)
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    async def evaluate(self, expression: str):
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise TimeoutError(f"page never satisfied: {expression}")

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def key(self, key: str, code: str, vk: int, text: str = "") -> None:
        base = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
        await self.call("Input.dispatchKeyEvent", type="keyDown", text=text, **base)
        await self.call("Input.dispatchKeyEvent", type="keyUp", **base)

    async def screenshot(self, path: str) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    async def close_async(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session, started above
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


async def browse(image: str, png: str | None = None, settle: float = 2.0,
                 extra: tuple[str, ...] = ()) -> dict:
    """Serve IMAGE, load it in Chromium: refused without the token, the workstation with it;
    a key press (F1) reaches the app. Returns what was seen, for tests and the screenshot.
    `extra`: more `srsalvage serve` options (--case, --mapfile)."""
    serve = Serve(image, extra=extra)
    chrome = Chromium()
    seen: dict = {"url": serve.url}
    try:
        await chrome.connect()
        await chrome.call("Page.enable")
        await chrome.call("Runtime.enable")
        await chrome.call("Page.addScriptToEvaluateOnNewDocument", source=CAPTURE)
        bare = serve.url.split("?")[0]
        await chrome.navigate(bare)
        seen["without_token"] = await chrome.evaluate("document.body.innerText")
        seen["without_token_terminal"] = await chrome.evaluate(
            "!!document.querySelector('.textual-terminal')")
        await chrome.navigate(serve.url)
        await chrome.wait_for("document.body.classList.contains('-first-byte')")
        # the workstation paints its panes: wait until the analysis has filled the tree
        await chrome.wait_for("window.__rx.join('').includes('generation') || "
                              "window.__rx.join('').includes('seqno')", timeout=90)
        await asyncio.sleep(settle)
        seen["screen"] = screen_text(await chrome.evaluate("window.__rx.join('')"))
        if png:
            await chrome.screenshot(png)
        await chrome.evaluate("document.querySelector('.xterm-helper-textarea').focus()")
        before = await chrome.evaluate("window.__rx.length")
        await chrome.key("F1", "F1", 112)
        # the help screen (F1) says what only it says
        await chrome.wait_for(f"window.__rx.slice({before}).join('').includes('append-only')", 30)
        await asyncio.sleep(0.5)
        seen["after_key"] = screen_text(await chrome.evaluate(f"window.__rx.slice({before}).join('')"))
        seen["sent"] = await chrome.evaluate("window.__tx")
        # the token is spent: the same URL in a fresh tab context without the cookie is refused
        await chrome.call("Network.enable")
        await chrome.call("Network.clearBrowserCookies")
        await chrome.navigate(serve.url)
        seen["token_reused"] = await chrome.evaluate("document.body.innerText")
    finally:
        try:
            await chrome.close_async()
        finally:
            chrome.close()
            serve.stop()
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--png")
    args = parser.parse_args(argv)
    seen = asyncio.run(browse(args.image, args.png))
    print(json.dumps({k: (v[:400] if isinstance(v, str) else v) for k, v in seen.items()},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
