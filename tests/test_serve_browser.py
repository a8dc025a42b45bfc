"""`srsalvage serve`: the workstation in a real headless Chromium, behind a one-time token.

Chromium is driven over the DevTools protocol by scripts/browser.py (no playwright): the page
is refused without the token; with it the workstation's panes are painted into the page's
terminal; a key press (F1) sent as a browser key event reaches the app (the help screen is
drawn); the spent token opens nothing in a browser without the session cookie. The served
evidence is never changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

textual_serve = pytest.importorskip("textual_serve", reason="textual-serve not installed")
import browser  # noqa: E402  (scripts/browser.py)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def demo_image(tmp_path_factory):
    from core.demo import build_demo
    image = str(tmp_path_factory.mktemp("serve") / "demo-sr.img")
    build_demo(image)
    return image


@pytest.mark.slow
def test_served_workstation_in_headless_chromium(demo_image, tmp_path):
    if browser.find_chromium() is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    before = _sha(demo_image)
    png = str(tmp_path / "served.png")
    seen = asyncio.run(browser.browse(demo_image, png))
    assert "refused" in seen["without_token"] and not seen["without_token_terminal"]
    screen = seen["screen"]
    for pane in ("1 VG tree", "2 Disk map", "3 Extent editor", "4 Hex", "READ-ONLY", "seqno"):
        assert pane in screen, pane
    assert '["stdin","\\u001bOP"]' in seen["sent"]          # F1 left the browser as a key...
    assert "append-only" in seen["after_key"]               # ...and the app drew its help
    assert "refused" in seen["token_reused"]
    with open(png, "rb") as f:
        head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 20_000
    assert _sha(demo_image) == before


def test_without_the_token_nothing_but_static_assets(demo_image):
    """Plain HTTP: no page and no websocket (no session process) without the token or its
    cookie; the token is spent by its first use; a foreign Origin cannot open the websocket."""
    import aiohttp

    serve = browser.Serve(demo_image)
    base, token = serve.url.split("/?token=")

    async def probe() -> dict:
        out = {}
        async with aiohttp.ClientSession() as anon:
            async with anon.get(base + "/") as r:
                out["page"] = r.status
            async with anon.get(base + "/?token=wrong" + token[:4]) as r:
                out["wrong"] = r.status
            async with anon.get(base + "/static/js/textual.js") as r:
                out["static"] = r.status
            try:
                await anon.ws_connect(base.replace("http", "ws") + "/ws")
                out["ws"] = 101
            except aiohttp.WSServerHandshakeError as exc:
                out["ws"] = exc.status
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as user:
            async with user.get(serve.url) as r:
                out["with_token"] = r.status
            async with user.get(base + "/") as r:
                out["cookie"] = r.status
            try:
                ws = await user.ws_connect(base.replace("http", "ws") + "/ws",
                                           headers={"Origin": "http://evil.example"})
                await ws.close()
                out["foreign_origin"] = 101
            except aiohttp.WSServerHandshakeError as exc:
                out["foreign_origin"] = exc.status
        async with aiohttp.ClientSession() as other:
            async with other.get(serve.url) as r:
                out["spent"] = r.status
        return out

    try:
        got = asyncio.run(probe())
    finally:
        serve.stop()
    assert "127.0.0.1" in serve.url
    assert got == {"page": 403, "wrong": 403, "static": 200, "ws": 403, "with_token": 200,
                   "cookie": 200, "foreign_origin": 403, "spent": 403}
