"""Replies stream into the page as Claude (the fake API, with slow tokens) writes them, survive
a reload mid-way, and can be stopped and continued."""

import re
import time

import pytest
from playwright.sync_api import Page, expect

from tests.fake_anthropic import carrying_on
from webapp import conversations, runs

pytestmark = pytest.mark.browser

REPLY = (
    "Checkpointing every chunk in a Redis stream lets long replies outlive the process writing "
    "them. When one worker dies, another notices its stale heartbeat, marks that run "
    "interrupted, keeps what was written so far, and offers Continue from exactly there."
)
QUESTION = "Can I reload while the reply is being written?"
TOKEN_DELAY_SECONDS = 0.1
"""Between the fake's tokens: the whole reply takes about 4 s."""
DONE_TIMEOUT_MS = 15_000
"""Bound of the wait for a whole reply (normally about 4 s)."""
CONVERSATION_URL = re.compile(r"/c/[A-Za-z0-9_-]{8,64}(#latest)?$")


@pytest.fixture
def claude_server(serve, fake_anthropic):
    """The app with Claude as its model, through the fake API with slow tokens."""
    fake_anthropic.reply_text = carrying_on(REPLY)
    fake_anthropic.token_delay = TOKEN_DELAY_SECONDS
    return serve(
        env={"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": fake_anthropic.url},
        ANTHROPIC_MAX_RETRIES=0,
        RUN_HEARTBEAT_SECONDS=0.2,
        RUN_STALE_SECONDS=1,
        RUN_REAPER_INTERVAL_SECONDS=0.5,
    )


def send(page: Page, text: str) -> str:
    """Send ``text`` from the start page; the conversation's URL."""
    page.locator('textarea[name="text"]').fill(text)
    page.get_by_role("button", name="Send").click()
    expect(page).to_have_url(CONVERSATION_URL)
    return page.url.split("#")[0]


def reply_so_far(page: Page) -> str | None:
    """The text of the reply being written (None once it is no longer being written), checked
    to be the start of REPLY: nothing repeated, nothing skipped."""
    text = page.evaluate("document.getElementById('run-text')?.textContent ?? null")
    assert text is None or REPLY.startswith(text), f"the page shows {text!r}, not the reply"
    return text


def wait_for_words(page: Page, count: int) -> str:
    """Wait until the reply being written shows at least ``count`` words; its text."""
    deadline = time.monotonic() + DONE_TIMEOUT_MS / 1000
    while len((text := reply_so_far(page) or "").split()) < count:
        assert time.monotonic() < deadline, f"the reply did not reach {count} words: {text!r}"
        page.wait_for_timeout(50)
    assert text != REPLY, "the reply was complete before the test could act mid-way"
    return text


def expect_growing_from(page: Page, earlier: str) -> str:
    """The reply being written continues ``earlier`` with more text; the longer text."""
    expect(page.locator("#run-text")).to_have_text(re.compile("^" + re.escape(earlier) + ".+"))
    return reply_so_far(page)


def follow_to_the_end(page: Page) -> None:
    """Watch the reply until it is done, checking that it only ever grows along REPLY."""
    deadline = time.monotonic() + DONE_TIMEOUT_MS / 1000
    shown = ""
    while (text := reply_so_far(page)) is not None:
        assert text.startswith(shown), f"the reply went from {shown!r} to {text!r}"
        shown = text
        assert time.monotonic() < deadline, f"the reply is still being written: {shown!r}"
        page.wait_for_timeout(50)
    expect(page.locator("#run")).to_have_count(0)


def expect_whole_reply(page: Page) -> None:
    """The conversation shows the question and the whole reply, once, finished."""
    expect(page.locator("#run")).to_have_count(0, timeout=DONE_TIMEOUT_MS)
    expect(page.locator(".run-ended")).to_have_count(0)
    expect(page.locator("article.message")).to_have_count(2)
    expect(page.locator("article.message.user .text")).to_have_text(QUESTION)
    reply = page.locator("article.message.assistant")
    expect(reply.locator(".text")).to_have_text(REPLY)
    assert reply.locator(".text").inner_text().strip() == REPLY
    expect(reply.locator(".mark")).to_have_count(0)


def expect_stored_reply(real_redis, conversation_url: str) -> None:
    conversation_id = conversation_url.rsplit("/", 1)[-1]
    assert runs.latest_run(real_redis, conversation_id).status == runs.DONE
    stored = conversations.read_messages(real_redis, conversation_id)
    assert [(m.role, m.content, m.status) for m in stored] == [
        ("user", QUESTION, None),
        ("assistant", REPLY, None),
    ]


def test_reply_streams_and_survives_a_reload(claude_server, page, screenshot, real_redis):
    page.goto(f"{claude_server.url}/")
    expect(page.locator(".site-header .model")).to_contain_text("Claude")
    conversation_url = send(page, QUESTION)

    expect(page.locator("#run .writing")).to_be_visible()
    expect(page.locator("#run .writing")).to_have_text("writing…")
    first = wait_for_words(page, 3)
    grown = expect_growing_from(page, first)
    before_reload = wait_for_words(page, len(grown.split()) + 3)
    screenshot(page, "streaming")

    page.reload()

    expect(page.locator("#run .writing")).to_be_visible()
    after_reload = expect_growing_from(page, before_reload)
    assert after_reload != REPLY, "the reply was complete before the reload could be seen"
    follow_to_the_end(page)
    expect_whole_reply(page)
    assert page.url.split("#")[0] == conversation_url
    expect_stored_reply(real_redis, conversation_url)


def test_stop_then_continue(claude_server, page, screenshot, real_redis):
    page.goto(f"{claude_server.url}/")
    conversation_url = send(page, QUESTION)
    wait_for_words(page, 5)

    page.locator("#run").get_by_role("button", name="Stop").click()

    expect(page.locator(".run-ended")).to_contain_text("You stopped this reply.")
    expect(page.locator("#run")).to_have_count(0)
    partial = page.locator("article.message.assistant")
    expect(partial.locator(".mark")).to_have_text("stopped")
    kept = partial.locator(".text").inner_text().strip()
    assert kept, "nothing of the reply was kept"
    assert REPLY.startswith(kept) and kept != REPLY, kept
    continue_button = page.locator(".run-ended").get_by_role("button", name="Continue")
    expect(continue_button).to_be_visible()
    screenshot(page, "stopped")

    with page.expect_navigation():
        continue_button.click()

    follow_to_the_end(page)
    expect_whole_reply(page)
    expect_stored_reply(real_redis, conversation_url)


def test_thinking_shows_then_the_text_streams(claude_server, fake_anthropic, page, screenshot):
    """While Claude thinks, the reply says "Thinking…"; then its text grows in its place, and
    what Claude thought is never on the page."""
    fake_anthropic.thinking = "PRIVATE " * 30  # about 3 s of thinking at the token delay
    page.goto(claude_server.url)
    send(page, QUESTION)
    status = page.locator("#run-status")
    expect(status).to_have_text("Thinking…", timeout=DONE_TIMEOUT_MS)
    assert (reply_so_far(page) or "") == ""
    screenshot(page, "thinking")
    expect(status).to_have_text("writing…", timeout=DONE_TIMEOUT_MS)
    wait_for_words(page, 3)
    follow_to_the_end(page)
    expect(page.locator(".message.assistant").last).to_contain_text(REPLY[:40])
    assert "PRIVATE" not in page.content()
