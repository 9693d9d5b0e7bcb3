"""Journeys 2, 3 and 12: the coffee break (the idle dialog opens by itself with a resume
code), the other device (the code typed at /resume, in lower case with spaces), and the
same without JavaScript; lifetimes set to seconds by settings."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_lifecycle import conversation_id, send, wait_until
from webapp.storage import keys

pytestmark = pytest.mark.browser

CODE = re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$")
DIALOG_TIMEOUT_MS = 15_000
"""The dialog opens about 3 s after the last activity (8 s sessions, warned 5 s before)."""


@pytest.fixture
def serve(serve):
    """Apps whose offline model answers at once."""
    return lambda **settings: serve(**{"OFFLINE_CHUNK_DELAY_SECONDS": 0, **settings})


def wait_for_dialog(page: Page):
    """The idle dialog, once it has opened by itself and shows its code."""
    dialog = page.locator("dialog#idle-dialog")
    expect(dialog).to_be_visible(timeout=DIALOG_TIMEOUT_MS)
    expect(dialog.locator(".code")).to_have_text(CODE)
    return dialog


def test_the_idle_dialog_gives_a_code_that_resumes_on_another_device(
    serve, page, new_context, real_redis, screenshot
):
    app = serve(SESSION_IDLE_SECONDS=8, IDLE_WARNING_SECONDS=5)
    page.goto(f"{app.url}/")
    send(page, "I want to learn to sail on Lake Geneva.")
    cid = conversation_id(page)
    session_key = keys.conversation_session(cid)

    # Coffee break: nobody touches mouse or keyboard; the dialog opens by itself.
    dialog = wait_for_dialog(page)
    expect(dialog.get_by_role("heading")).to_contain_text("You've been away")
    expect(dialog.locator(".exchanges")).to_have_text("1 exchange is")
    expect(dialog.locator(".topic")).to_have_text("I want to learn to sail on Lake Geneva.")
    # In the reader's own zone (see test_local_times.py): a date with its year, and a time.
    expect(dialog.locator(".valid-until")).to_have_text(re.compile(r"\b20\d\d\b.*\d\d:\d\d"))
    expect(dialog).to_contain_text("Valid until")
    assert page.evaluate("document.getElementById('idle-dialog').matches(':modal')")
    assert page.evaluate("document.getElementById('idle-dialog').contains(document.activeElement)")
    expect(dialog.get_by_role("button", name="Keep chatting")).to_be_focused()
    assert real_redis.hget(session_key, "parked_until")
    screenshot(page, "idle-dialog")

    # Escape is Keep chatting: the dialog closes and the session is no longer parked.
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    wait_until(lambda: "parked_until" not in real_redis.hgetall(session_key))

    # Away again: a new code. It is typed on the phone, in lower case with spaces.
    dialog = wait_for_dialog(page)
    code = dialog.locator(".code").inner_text()
    phone = new_context().new_page()
    phone.goto(f"{app.url}/resume")
    phone.get_by_label("Resume code").fill(code.lower().replace("-", " "))
    screenshot(phone, "resume")
    phone.get_by_role("button", name="Resume").click()

    expect(phone).to_have_url(re.compile(rf"/c/{cid}#latest$"))
    messages = phone.locator("article.message")
    expect(messages).to_have_count(2)
    expect(messages.first).to_contain_text("I want to learn to sail on Lake Geneva.")
    send(phone, "Which boat should I start with?")
    expect(phone.locator("article.message.assistant").last).to_contain_text(
        "This is message 2 of our conversation. You started with: "
        "“I want to learn to sail on Lake Geneva.”"
    )
    screenshot(phone, "resumed")
    assert code not in app.output() and code.replace("-", "") not in app.output()


def test_without_javascript_a_button_gives_the_code_and_keep_chatting_carries_on(
    serve, new_context, real_redis, screenshot
):
    app = serve()
    page = new_context(java_script_enabled=False).new_page()
    page.goto(f"{app.url}/")
    page.locator('textarea[name="text"]').fill("Plan a vegetable patch.")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("article.message.assistant")).to_have_count(1, timeout=10_000)
    cid = conversation_id(page)

    page.get_by_role("button", name="Get a resume code").click()
    notice = page.get_by_role("status")
    expect(notice.get_by_role("heading", name="Your resume code")).to_be_visible()
    expect(notice.locator(".code")).to_have_text(CODE)
    expect(notice).to_contain_text("Valid until")
    assert real_redis.hget(keys.conversation_session(cid), "parked_until")
    screenshot(page, "resume-code-no-js")

    notice.get_by_role("button", name="Keep chatting").click()
    expect(page).to_have_url(re.compile(rf"/c/{cid}#latest$"))
    expect(page.get_by_role("button", name="Get a resume code")).to_be_visible()
    assert "parked_until" not in real_redis.hgetall(keys.conversation_session(cid))
