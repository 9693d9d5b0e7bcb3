"""Export and import in the browser: "Download this conversation" as JSON, then "Import a
conversation" from that file makes a new conversation with the same messages."""

import json

import pytest
from playwright.sync_api import expect

from tests.browser.test_lifecycle import conversation_id, send

pytestmark = pytest.mark.browser


def test_download_then_import_gives_the_same_conversation(serve, page, tmp_path):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0)
    page.goto(f"{app.url}/")
    send(page, "Plan a trip to Porto")
    send(page, "With a day in Braga")
    original = conversation_id(page)
    with page.expect_download() as markdown:
        page.get_by_role("link", name="Markdown").click()
    assert markdown.value.suggested_filename == f"conversation-{original}.md"
    with page.expect_download() as exported:
        page.get_by_role("link", name="JSON").click()
    saved = tmp_path / exported.value.suggested_filename
    exported.value.save_as(saved)
    assert len(json.loads(saved.read_text())["messages"]) == 4

    page.goto(f"{app.url}/")
    page.get_by_role("link", name="Import a conversation").click()
    page.get_by_label("Conversation file (JSON)").set_input_files(saved)
    page.get_by_role("button", name="Import").click()
    expect(page.locator("article.message")).to_have_count(4)
    assert conversation_id(page) != original
    expect(page.locator("article.message.user .text").last).to_have_text("With a day in Braga")
