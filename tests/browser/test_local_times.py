"""Times in the reader's own zone: every time is a <time datetime> in UTC in the HTML, and
the page's script shows it in the browser's zone (relative in the list of conversations);
without script it stays in UTC."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.test_lifecycle import send

pytestmark = pytest.mark.browser


@pytest.fixture
def app(serve):
    return serve(OFFLINE_CHUNK_DELAY_SECONDS=0)


def test_times_show_in_the_readers_zone(app, new_context):
    page = new_context(timezone_id="Asia/Tokyo", locale="en-US").new_page()
    page.goto(f"{app.url}/")
    send(page, "What time is it where I am?")
    sent = page.locator("article.message.user time").first
    utc = datetime.strptime(sent.get_attribute("datetime"), "%Y-%m-%dT%H:%M:%SZ")
    tokyo = utc.replace(tzinfo=UTC) + timedelta(hours=9)
    expect(sent).to_contain_text("GMT+9")
    expect(sent).to_contain_text(tokyo.strftime("%I:%M").lstrip("0"))
    assert sent.get_attribute("title").endswith("UTC")  # the UTC time, on hover

    page.goto(f"{app.url}/")
    expect(page.locator(".conversations time").first).to_have_text(re.compile(r"this minute|now"))


def test_without_script_times_stay_in_utc(app, new_context):
    page = new_context(timezone_id="Asia/Tokyo", java_script_enabled=False).new_page()
    page.goto(f"{app.url}/")
    page.locator('textarea[name="text"]').fill("And without script?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("article.message.user time").first).to_have_text(re.compile(r"UTC$"))
