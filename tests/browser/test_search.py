"""Searching your own conversations in Chromium: a word from an old message, on an earlier
page of its transcript, is found and its snippet leads to it; another visitor's is not."""

import pytest
from playwright.sync_api import expect

from tests.browser.test_lifecycle import send

pytestmark = pytest.mark.browser


def test_a_word_from_an_old_message_is_found_and_another_visitors_is_not(
    serve, new_context, screenshot
):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0, PAGE_SIZE=4)
    stranger = new_context().new_page()
    stranger.goto(f"{app.url}/")
    send(stranger, "My own notes on the axolotl tank")

    page = new_context().new_page()
    page.goto(f"{app.url}/")
    send(page, "Which plants suit a fish tank?")
    for text in ("And for an axolotl?", "How often to feed?", "Thanks, and the filter?"):
        send(page, text)  # the second message is now pages back
    page.goto(f"{app.url}/")
    send(page, "Something else entirely")

    page.get_by_role("link", name="Search").click()
    page.get_by_label("Words to find").fill("axolo")
    page.get_by_role("button", name="Search").click()
    results = page.locator("ol.results > li")
    expect(results).to_have_count(1)
    expect(results.locator("mark").first).to_have_text("axolotl")
    expect(page.get_by_text("My own notes")).to_have_count(0)
    screenshot(page, "search")

    results.get_by_role("link", name="You").click()
    assert "before=" in page.url
    message = page.locator("article.message.user", has_text="And for an axolotl?")
    expect(message).to_be_in_viewport()
