"""The list of conversations beside the page, in Chromium: a reply written in another tab
shows as being written, then as a new reply once done, until it is read; the page being
read is marked; rename and delete from the list."""

import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.test_lifecycle import conversation_id, send

pytestmark = pytest.mark.browser


def entry(page, title):
    return page.locator("#sidebar li.entry").filter(has_text=title)


def test_a_reply_written_in_another_tab_shows_in_the_list(serve, context):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0.3)
    reading = context.new_page()
    reading.goto(f"{app.url}/")
    send(reading, "The one I am reading")
    expect(entry(reading, "The one I am reading").locator("a").first).to_have_attribute(
        "aria-current", "page"
    )

    other_tab = context.new_page()
    other_tab.goto(f"{app.url}/")
    other_tab.locator('textarea[name="text"]').fill("Answer me in the other tab")
    other_tab.locator('textarea[name="text"]').press("Enter")
    # Closed once on its conversation, while the reply is written: a tab closed while its
    # form's navigation was still under way could hang Playwright's close.
    other_tab.wait_for_url(re.compile(r"/c/[^/#]+#latest$"))
    other_tab.close()

    reading.reload()
    expect(entry(reading, "Answer me in the other tab")).to_contain_text("writing…")
    # The list is as the page was loaded: reload until the reply is done (about 6 s).
    deadline = time.monotonic() + 20
    while "new reply" not in entry(reading, "Answer me in the other tab").inner_text():
        assert time.monotonic() < deadline, "the reply written in the other tab never ended"
        reading.wait_for_timeout(500)
        reading.reload()
    expect(entry(reading, "Answer me in the other tab")).not_to_contain_text("writing…")
    entry(reading, "Answer me in the other tab").locator("a").first.click()
    expect(entry(reading, "Answer me in the other tab")).not_to_contain_text("new reply")
    expect(entry(reading, "Answer me in the other tab").locator("a").first).to_have_attribute(
        "aria-current", "page"
    )


def test_rename_and_delete_from_the_list(serve, page):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0)
    page.goto(f"{app.url}/")
    send(page, "A name I will change")
    kept = conversation_id(page)
    page.goto(f"{app.url}/")
    send(page, "One I will delete")
    here = page.url.split("#")[0]
    page.get_by_role("link", name="Rename or delete “A name I will change”").click()
    page.get_by_label("Name").fill("Trip to Porto")
    page.get_by_role("button", name="Rename").click()
    expect(entry(page, "Trip to Porto")).to_be_visible()
    assert page.url == here  # back where the list was used

    page.get_by_role("link", name="Rename or delete “One I will delete”").click()
    page.get_by_role("button", name="Delete…").click()
    page.get_by_role("button", name="Delete it").click()  # asked once, as ever
    expect(page.get_by_role("heading", name="Start a new chat")).to_be_visible()
    expect(entry(page, "One I will delete")).to_have_count(0)
    expect(entry(page, "Trip to Porto").locator("a").first).to_have_attribute("href", f"/c/{kept}")
