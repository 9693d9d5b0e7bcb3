"""What is typed survives a send the server refuses unread (a body over the limit): the
413 page leads back to the message box, which has the text again; once a message is
stored, this browser forgets it."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_lifecycle import conversation_id, send

pytestmark = pytest.mark.browser

BODY_LIMIT = 2_000
TOO_LONG = "A thought I would hate to type twice. " * 80  # over BODY_LIMIT once sent


@pytest.fixture
def app(serve):
    return serve(MAX_CONTENT_LENGTH=BODY_LIMIT, OFFLINE_CHUNK_DELAY_SECONDS=0)


def box(page: Page):
    return page.locator('textarea[name="text"]')


def refused_then_back(page: Page) -> None:
    box(page).fill(TOO_LONG)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("heading", name="That was too much to send at once")).to_be_visible()
    page.get_by_role("link", name="Go back to what you typed").click()
    expect(box(page)).to_have_value(TOO_LONG)


def test_a_message_refused_unread_comes_back_into_the_box(app, page):
    page.goto(f"{app.url}/")
    send(page, "A first message")
    refused_then_back(page)
    assert f"/c/{conversation_id(page)}" in page.url

    send(page, "A shorter one")
    expect(page.locator("article.message.user .text").last).to_have_text("A shorter one")
    kept = page.evaluate("Object.keys(localStorage)")
    assert not [key for key in kept if key.startswith(("rc:draft:", "rc:sent:"))], kept


def test_the_start_page_keeps_a_refused_first_message_too(app, page):
    page.goto(f"{app.url}/")
    refused_then_back(page)
    send(page, "Shorter, then")
    kept = page.evaluate("Object.keys(localStorage)")
    assert not [key for key in kept if key.startswith(("rc:draft:", "rc:sent:"))], kept
