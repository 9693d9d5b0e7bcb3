"""The resume-chat command: sweep, and serve as `make run` uses it."""

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from webapp import cli, conversations
from webapp.storage import connect, keys

RESUME_CHAT = str(Path(sys.executable).with_name("resume-chat"))


def test_sweep_reports_what_it_removed(monkeypatch, redis_server, real_redis, lifetimes):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("FLASK_SECRET_KEY", "x")
    kept = conversations.create_conversation(real_redis, "guest:a", lifetimes)
    gone = conversations.create_conversation(real_redis, "guest:a", lifetimes)
    real_redis.delete(keys.conversation_meta(gone))
    result = CliRunner().invoke(cli.main, ["sweep"])
    assert result.exit_code == 0, result.output
    assert "Removed 1 stale index entry." in result.output
    assert real_redis.zrange(keys.owner_conversations("guest:a"), 0, -1) == [kept]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        page = self.get(path)
        fields = dict(re.findall(r'name="(csrf_token|message_id)" value="([^"]+)"', page))
        data = urllib.parse.urlencode({**fields, "text": text}).encode()
        action = re.search(r'<form class="composer" method="post" action="([^"]+)"', page)[1]
        with self.opener.open(self.base + action, data=data, timeout=10) as response:
            return response.geturl()


def start_serving(instance: Path, port: int) -> subprocess.Popen:
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "REDIS_URL" and not key.startswith("FLASK_")
    }
    env.update(PORT=str(port), FLASK_INSTANCE_PATH=str(instance))
    process = subprocess.Popen(
        [RESUME_CHAT, "serve", "--workers", "2", "--threads", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"resume-chat serve did not come up:\n{process.communicate()[0]}")


def stop_with_ctrl_c(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    return output


def test_serve_with_embedded_redis_keeps_conversations_across_restarts(tmp_path):
    port = free_port()
    browser = Browser(f"http://127.0.0.1:{port}")
    server = start_serving(tmp_path, port)
    try:
        landed = [browser.post_form("/", f"Question number {i}") for i in range(6)]
        assert all("/c/" in url for url in landed)
        embedded = connect(f"redis://127.0.0.1:{(tmp_path / 'redis' / 'port').read_text()}/0")
        assert embedded.ping()
    finally:
        output = stop_with_ctrl_c(server)
    assert server.returncode == 0, output
    with pytest.raises(redis.exceptions.ConnectionError):
        embedded.ping()
    assert (tmp_path / "redis" / "appendonlydir").is_dir()

    server = start_serving(tmp_path, port)
    try:
        listing = browser.get("/")
        for i in range(6):
            assert f"Question number {i}" in listing
        assert "You said:" in browser.get(urllib.parse.urlparse(landed[0]).path)
    finally:
        stop_with_ctrl_c(server)
