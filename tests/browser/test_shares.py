"""Share links in Chromium: a link made on the conversation's share page opens in a fresh
context (no login, no cookies), "Continue in my own chat" makes the reader a conversation of
their own, and once the owner revokes it the link is the friendly 404."""

import pytest
from playwright.sync_api import expect

from tests.browser.test_lifecycle import send

pytestmark = pytest.mark.browser


def test_a_share_link_opens_anywhere_continues_and_404s_once_revoked(
    serve, new_context, screenshot
):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0)
    owner = new_context().new_page()
    owner.goto(f"{app.url}/")
    send(owner, "Ideas for a rainy Sunday")
    owner.get_by_role("link", name="Share…").click()
    owner.get_by_role("button", name="Make a share link").click()
    link = owner.locator("ul.share-links input").first.input_value()
    assert link.startswith(f"{app.url}/s/")

    reader = new_context().new_page()
    reader.goto(link)
    expect(reader.get_by_role("heading", name="Ideas for a rainy Sunday")).to_be_visible()
    expect(reader.locator("main form")).to_have_count(1)
    screenshot(reader, "share-link")
    reader.get_by_role("button", name="Continue in my own chat").click()
    reader.wait_for_url(f"{app.url}/c/**")
    send(reader, "Make it a list of five")
    expect(reader.locator("article.message.user")).to_have_count(2)

    owner.get_by_role("button", name="Revoke").click()
    expect(owner.locator("ul.share-links")).to_have_count(0)
    gone = new_context().new_page()
    response = gone.goto(link)
    assert response.status == 404
    expect(gone.get_by_text("I couldn't find that page")).to_be_visible()
