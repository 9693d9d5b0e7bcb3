"""The message box and the replies, with script: Enter sends, Shift+Enter starts a new line,
the box grows with its text, Escape stops a reply being written; each reply (and each block
of code) has a Copy button; colours follow the system's dark or light scheme."""

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_enter_sends_and_shift_enter_starts_a_new_line(serve, page):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0)
    page.goto(f"{app.url}/")
    box = page.locator('textarea[name="text"]')
    box.click()
    height = box.bounding_box()["height"]
    box.press_sequentially("First line")
    box.press("Shift+Enter")
    for number in range(2, 7):
        box.press_sequentially(f"line {number}")
        box.press("Shift+Enter")
    assert box.input_value().count("\n") == 6  # still in the box, on new lines
    assert box.bounding_box()["height"] > height  # it grew with its text
    box.press("Enter")
    expect(page.locator("article.message.user .text").first).to_contain_text("First line")
    expect(page.locator("article.message.assistant")).to_have_count(1)


def test_escape_stops_the_reply_being_written(serve, page):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=1)
    page.goto(f"{app.url}/")
    page.locator('textarea[name="text"]').fill("Write slowly, please")
    page.locator('textarea[name="text"]').press("Enter")
    expect(page.locator("#run")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_text("You stopped this reply.")).to_be_visible()


def test_a_reply_has_a_copy_button(serve, new_context):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0)
    context = new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(f"{app.url}/")
    page.locator('textarea[name="text"]').fill("Copy me")
    page.locator('textarea[name="text"]').press("Enter")
    copy = page.get_by_role("button", name="Copy this reply")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert "You said: “Copy me”" in page.evaluate("navigator.clipboard.readText()")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_colours_follow_the_systems_scheme(serve, new_context, scheme):
    app = serve()
    page = new_context(color_scheme=scheme).new_page()
    page.goto(f"{app.url}/")
    background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    channels = background[background.index("(") + 1 : -1].split(", ")
    red, green, blue = (int(channel) for channel in channels[:3])
    assert (red + green + blue < 200) is (scheme == "dark"), background
