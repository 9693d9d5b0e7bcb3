"""Journey 1, "First chat": a guest asks a question, gets a reply, and keeps the conversation
across a reload, the start page and a restart of the app."""

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

QUESTION = "How do I keep a conversation when the server restarts?"
FOLLOW_UP = "And what if Redis restarts too?"
CONVERSATION_URL = re.compile(r"/c/[A-Za-z0-9_-]{8,64}(#latest)?$")


def send(page: Page, text: str) -> None:
    """Type into the message box and press Send, as a user would."""
    box = page.locator('textarea[name="text"]')
    box.fill(text)
    page.get_by_role("button", name="Send").click()


def expect_exchange(page: Page, number: int, question: str) -> None:
    """The ``number``-th user message is ``question`` and the reply after it quotes it."""
    user = page.locator("article.message.user").nth(number - 1)
    reply = page.locator("article.message.assistant").nth(number - 1)
    expect(user.locator(".text")).to_have_text(question)
    expect(reply.locator(".text")).to_have_text(
        re.compile(rf"^\s*You said: “{re.escape(question)}”")
    )


def expect_conversation(page: Page, *questions: str) -> None:
    """The page shows each question and its finished reply, in order."""
    expect(page.locator("#run")).to_have_count(0)  # no reply is still being written
    expect(page.locator("article.message")).to_have_count(2 * len(questions))
    for number, question in enumerate(questions, start=1):
        expect_exchange(page, number, question)


def send_follow_up(page: Page, conversation_url: str) -> None:
    """Send the follow-up and see it answered, at the latest message of the same conversation."""
    send(page, FOLLOW_UP)
    expect(page).to_have_url(re.compile(r"#latest$"))
    assert page.url.split("#")[0] == conversation_url
    expect_conversation(page, QUESTION, FOLLOW_UP)
    expect(page.locator("article.message.assistant .text").last).to_contain_text(
        "This is message 2 of our conversation."
    )


def test_first_chat(app_server, page, screenshot):
    page.goto(f"{app_server.url}/")
    expect(page.locator(".site-header .model")).to_have_text("offline model")
    expect(page.get_by_role("heading", name="Start a new chat")).to_be_visible()

    send(page, QUESTION)

    expect(page).to_have_url(CONVERSATION_URL)
    conversation_url = page.url.split("#")[0]
    expect_conversation(page, QUESTION)
    expect(page.locator("article.message.assistant .text")).to_contain_text(
        "This is the start of our conversation."
    )
    expect(page.get_by_role("heading", level=1)).to_have_text(QUESTION)
    screenshot(page, "first-chat")

    page.reload()
    expect_conversation(page, QUESTION)

    page.goto(f"{app_server.url}/")
    listed = page.locator(".conversations li")
    expect(listed).to_have_count(1)
    expect(listed.get_by_role("link", name=QUESTION, exact=True)).to_have_attribute(
        "href", conversation_url.removeprefix(app_server.url)
    )

    app_server.restart()

    page.goto(conversation_url)
    expect_conversation(page, QUESTION)

    # The form of the page loaded after the restart still carries a valid CSRF token.
    send_follow_up(page, conversation_url)
    screenshot(page, "first-chat-follow-up")

    page.goto(f"{app_server.url}/")
    expect(page.locator(".conversations li")).to_have_count(1)
    expect(page.locator(".conversations li .meta")).to_contain_text("4 messages")


def test_first_chat_without_javascript(app_server, new_context, screenshot):
    page = new_context(java_script_enabled=False).new_page()
    page.goto(f"{app_server.url}/")
    expect(page.locator(".site-header .model")).to_have_text("offline model")

    send(page, QUESTION)

    expect(page).to_have_url(CONVERSATION_URL)
    conversation_url = page.url.split("#")[0]
    expect_conversation(page, QUESTION)

    send_follow_up(page, conversation_url)
    screenshot(page, "first-chat-no-js")
