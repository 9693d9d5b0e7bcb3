"""P2 and P7, the conversation page: its throughput under wrk against a bare Flask + Redis +
Jinja2 page making the same reads (bench/bare_page.py), and its weight on a first load in
Chromium.

Both servers run at once on the bench's Redis, with the same gunicorn settings; the page is a
guest's conversation of 50 realistic messages, fetched by its owner (the app's own session
cookie, which the bare page reads too, with the same secret).
"""

import contextlib
import gzip
import hashlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask
from playwright.sync_api import sync_playwright

from bench.load import WrkResult, expect_only, run_wrk
from bench.workload import realistic_messages
from tests.app_server import serving
from tests.chromium import CHROMIUM, CHROMIUM_ARGS
from webapp import conversations
from webapp.conversations import Lifetimes
from webapp.storage import connect
from webapp.storage.embedded import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATIC = PROJECT_ROOT / "static"
WORKERS, THREADS = 2, 8
"""The defaults of `resume-chat serve`, for both servers."""
SECRET_KEY = "bench-page-secret-key"
MESSAGES = 50
LIFETIMES = Lifetimes(session_idle=1800, session_max=86400, transcript_retention=604800)
P2_CONNECTIONS = 8
P2_SECONDS = 3
P2_ROUNDS = 5
WARM_UP_SECONDS = 1
START_TIMEOUT_SECONDS = 20
STOP_TIMEOUT_SECONDS = 15
P7_GOAL_BYTES = 100 * 1024


@contextlib.contextmanager
def bare_server(redis_url: str, log_path: Path) -> Iterator[tuple[str, int]]:
    """bench/bare_page.py under gunicorn on a free port; yields its URL and master's pid."""
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("FLASK_") and name != "REDIS_URL"
    }
    env.update(REDIS_URL=redis_url, FLASK_SECRET_KEY=SECRET_KEY, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "bench.bare_page", "--port", str(port)]
    command += ["--workers", str(WORKERS), "--threads", str(THREADS)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the master and its workers end together
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while log_path.read_text().count("Worker ready") < WORKERS:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bare page did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def owners_cookie(app_url: str) -> tuple[str, str]:
    """A new browser's session cookie from the app's start page ("session=..."), and the
    guest owner it names."""
    with urllib.request.urlopen(f"{app_url}/") as response:
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    signer = Flask(__name__)
    signer.secret_key = SECRET_KEY
    serializer = signer.session_interface.get_signing_serializer(signer)
    return cookie, f"guest:{serializer.loads(cookie.split('=', 1)[1])['guest_id']}"


def fill_conversation(redis_url: str, owner: str) -> str:
    """A new conversation of ``owner`` holding MESSAGES realistic messages; its id."""
    r = connect(redis_url)
    conversation_id = conversations.create_conversation(r, owner, LIFETIMES)
    for message in realistic_messages(MESSAGES, seed=7):
        conversations.append_message_and_touch(r, conversation_id, owner, message, LIFETIMES)
    r.close()
    return conversation_id


def fetch(url: str, cookie: str) -> bytes:
    """The body of a GET that must answer 200."""
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(request) as response:
        return response.read()


@dataclass(frozen=True)
class Throughput:
    """P2's rounds, interleaved: wrk on the app's page and on the bare page."""

    app: list[WrkResult]
    bare: list[WrkResult]
    app_page_bytes: int
    bare_page_bytes: int

    @staticmethod
    def median_rate(results: list[WrkResult]) -> float:
        return statistics.median(result.per_second for result in results)

    @property
    def round_ratios(self) -> list[float]:
        return [a.per_second / b.per_second for a, b in zip(self.app, self.bare, strict=True)]

    @property
    def ratio(self) -> float:
        """The median of the rounds' ratios: each round's two runs are next to each other
        in time, so the machine's other load changes least between them."""
        return statistics.median(self.round_ratios)


def throughput(servers: dict[str, tuple[str, int]], path: str, cookie: str) -> Throughput:
    """P2: wrk on the page of both ``servers`` ("app" and "bare": URL, gunicorn master's
    pid), a warm-up each, then P2_ROUNDS interleaved rounds."""
    headers = {"Cookie": cookie}
    for url, _ in servers.values():
        warm_up = run_wrk(url + path, P2_CONNECTIONS, WARM_UP_SECONDS, headers)
        expect_only(warm_up, 200, f"GET {url}{path}")
    rounds: dict[str, list[WrkResult]] = {side: [] for side in servers}
    for _ in range(P2_ROUNDS):
        for side, (url, pid) in servers.items():
            result = run_wrk(url + path, P2_CONNECTIONS, P2_SECONDS, headers, server_pid=pid)
            expect_only(result, 200, f"GET {url}{path}")
            rounds[side].append(result)
    return Throughput(
        app=rounds["app"],
        bare=rounds["bare"],
        app_page_bytes=len(fetch(servers["app"][0] + path, cookie)),
        bare_page_bytes=len(fetch(servers["bare"][0] + path, cookie)),
    )


@dataclass(frozen=True)
class Resource:
    """One response of the first load, as Chromium received it."""

    url: str
    kind: str
    """Chromium's resource type: document, stylesheet, script, image, font, fetch..."""
    body: int
    """Bytes of the body as decoded (uncompressed)."""
    transferred: int
    """Bytes on the wire: response headers plus the body as sent (compressed or not)."""
    gzipped: int
    """The body's size gzipped (level 6), for what compression would save."""
    sha256: str


@dataclass(frozen=True)
class Weight:
    """P7: every response of a first load with an empty cache."""

    resources: list[Resource]
    same_origin: bool
    scripts_are_ours: bool
    """Every script is a file of the project's static/ folder, byte for byte."""

    @property
    def body(self) -> int:
        return sum(r.body for r in self.resources)

    @property
    def transferred(self) -> int:
        return sum(r.transferred for r in self.resources)

    @property
    def gzipped(self) -> int:
        return sum(r.gzipped for r in self.resources)


def _is_our_static_file(url: str, sha256: str) -> bool:
    path = urlsplit(url).path
    if not path.startswith("/static/"):
        return False
    candidate = (STATIC / path.removeprefix("/static/")).resolve()
    return (
        candidate.is_relative_to(STATIC)
        and candidate.is_file()
        and hashlib.sha256(candidate.read_bytes()).hexdigest() == sha256
    )


def page_weight(app_url: str, path: str, cookie: str) -> Weight:
    """P7: Chromium loads the page with an empty cache as its owner; every response counted,
    until the network has been idle for half a second."""
    name, value = cookie.split("=", 1)
    resources = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([{"name": name, "value": value, "url": app_url}])
            page = context.new_page()
            finished = []
            page.on("requestfinished", lambda request: finished.append(request))
            answer = page.goto(app_url + path, wait_until="networkidle")
            if answer is None or answer.status != 200:
                raise RuntimeError(f"GET {path} in Chromium: {answer and answer.status}")
            for request in finished:
                body = request.response().body()
                sizes = request.sizes()
                resources.append(
                    Resource(
                        url=request.url,
                        kind=request.resource_type,
                        body=len(body),
                        transferred=sizes["responseHeadersSize"] + sizes["responseBodySize"],
                        gzipped=len(gzip.compress(body, compresslevel=6)),
                        sha256=hashlib.sha256(body).hexdigest(),
                    )
                )
        finally:
            browser.close()
    origin = f"{urlsplit(app_url).scheme}://{urlsplit(app_url).netloc}"
    return Weight(
        resources=resources,
        same_origin=all(r.url.startswith(origin + "/") for r in resources),
        scripts_are_ours=all(
            _is_our_static_file(r.url, r.sha256) for r in resources if r.kind == "script"
        ),
    )


HTML_PARTS = {
    "the browser's copy (JSON of the messages)": re.compile(
        rb'<script type="application/json" id="browser-copy".*?</script>', re.DOTALL
    ),
    "fork buttons (one per message)": re.compile(rb'<button type="submit" form="fork".*?</button>'),
    "message texts": re.compile(rb'<div class="text[^"]*">.*?</div>', re.DOTALL),
}


def html_parts(html: bytes) -> dict[str, int]:
    """Bytes of the page's HTML taken by each of HTML_PARTS."""
    return {
        name: sum(len(match) for match in pattern.findall(html))
        for name, pattern in HTML_PARTS.items()
    }


@dataclass(frozen=True)
class PageResults:
    throughput: Throughput
    weight: Weight
    html_parts: dict[str, int]


def conversation_page(redis_url: str, instance: Path) -> PageResults:
    """Serve the app and the bare page on ``redis_url``, make the conversation, measure."""
    env = {"FLASK_SECRET_KEY": SECRET_KEY}
    with (
        serving(redis_url, instance, workers=WORKERS, threads=THREADS, env=env) as app,
        bare_server(redis_url, instance / "bare_page.log") as bare,
    ):
        cookie, owner = owners_cookie(app.url)
        path = f"/c/{fill_conversation(redis_url, owner)}"
        html = fetch(app.url + path, cookie)
        if b'id="browser-copy"' not in html:
            raise RuntimeError(f"GET {path}: not the owner's conversation page")
        rates = throughput({"app": (app.url, app.process.pid), "bare": bare}, path, cookie)
        weight = page_weight(app.url, path, cookie)
    return PageResults(rates, weight, html_parts(html))
