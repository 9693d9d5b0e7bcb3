"""A page whose event stream is refused (its owner holds as many as allowed) falls back to
refreshing itself: the reply still appears, in full, when it is done."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_lifecycle import send

pytestmark = pytest.mark.browser


def test_a_refused_stream_falls_back_to_refreshing_until_the_reply_is_done(serve, page):
    app = serve(STREAMS_PER_OWNER=0, OFFLINE_CHUNK_DELAY_SECONDS=0.2)
    page.goto(f"{app.url}/")
    send(page, "Tell me about streams that are refused")
    reply = page.locator("article.message.assistant .text").last
    expect(reply).to_contain_text("You said: “Tell me about streams that are refused”")
    log = app.log_path.read_text()
    assert re.search(r'"GET /c/[^/]+/runs/[^/]+/events\S* HTTP/1.1" 429', log), log[-2000:]
    assert not re.search(r'"GET /c/[^/]+/runs/[^/]+/events\S* HTTP/1.1" 200', log)
