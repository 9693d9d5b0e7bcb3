"""The resume-chat command: serving as `make run` uses it (its repair: test_deadlines)."""

import http.cookiejar
import re
import signal
import urllib.parse
import urllib.request

import pytest
import redis

from tests.app_server import AppServer, serving
from webapp.storage import connect


class Browser:
    """A cookie-keeping HTTP client that fills in forms the way the pages ask."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as response:
            return response.read().decode()

    def post_form(self, path: str, text: str) -> str:
        """Fill the page's message form with ``text``, send it, and return where it landed."""
        page = self.get(path)
        fields = dict(re.findall(r'name="(csrf_token|message_id)" value="([^"]+)"', page))
        data = urllib.parse.urlencode({**fields, "text": text}).encode()
        action = re.search(r'<form class="composer" method="post" action="([^"]+)"', page)[1]
        with self.opener.open(self.base + action, data=data, timeout=10) as response:
            return response.geturl()


def test_serve_with_embedded_redis_keeps_conversations_across_restarts(tmp_path):
    """What `make run` promises: no REDIS_URL, several workers, Ctrl-C stops everything,
    and serving again shows the same conversations."""
    server = AppServer(None, tmp_path, tmp_path / "app.log", workers=2)
    browser = Browser(server.url)
    server.start()
    try:
        landed = [browser.post_form("/", f"Question number {i}") for i in range(6)]
        assert all("/c/" in url for url in landed)
        embedded = connect(f"redis://127.0.0.1:{(tmp_path / 'redis' / 'port').read_text()}/0")
        assert embedded.ping()
    finally:
        status = server.stop(signal.SIGINT)
    assert status == 0, server.output()
    with pytest.raises(redis.exceptions.ConnectionError):
        embedded.ping()
    assert (tmp_path / "redis" / "appendonlydir").is_dir()

    server.start()
    try:
        listing = browser.get("/")
        for i in range(6):
            assert f"Question number {i}" in listing
        assert "You said:" in browser.get(urllib.parse.urlparse(landed[0]).path)
    finally:
        server.stop(signal.SIGINT)


def test_the_served_app_believes_no_forwarded_header_without_trusted_proxies(
    redis_server, tmp_path
):
    """Served by gunicorn with TRUSTED_PROXIES at its default 0, a client on loopback (where
    gunicorn would otherwise trust X-Forwarded-Proto) can't make the app think it came over
    HTTPS: cookies stay without Secure. With one trusted proxy, its header is believed."""
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    for proxies, secure in (("0", False), ("1", True)):
        env = {"FLASK_TRUSTED_PROXIES": proxies}
        with serving(redis_server.url, tmp_path / proxies, env=env) as server:
            request = urllib.request.Request(server.url + "/", headers=forwarded)
            with urllib.request.urlopen(request, timeout=10) as response:
                cookies = response.headers.get_all("Set-Cookie")
        assert cookies, "a guest's first visit sets its session cookie"
        assert all(("; Secure" in cookie) is secure for cookie in cookies), (proxies, cookies)


def test_each_worker_keeps_what_it_loaded_from_the_garbage_collector(redis_server, tmp_path):
    """The app, its libraries and the SDK's models, loaded before a worker serves, are
    frozen (gc.freeze): a full collection walks only what requests made since, so no request
    waits through a walk of the whole heap."""
    with serving(redis_server.url, tmp_path, workers=2) as server:
        output = server.output()
    frozen = [int(count) for count in re.findall(r"(\d+) objects kept from the garbage", output)]
    assert len(frozen) == 2, output
    assert min(frozen) > 10_000, frozen
