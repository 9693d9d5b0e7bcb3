"""Every page type passes axe-core (the engine axe-playwright-python ships) in Chromium with
no serious or critical violation: the start page, a conversation in each state and with the
idle dialog open, resume, login, register, import, search, a share link and its owner's
page, the gone page and the admin console."""

import re

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.browser.test_lifecycle import conversation_id, register, send
from tests.test_admin import end_session
from webapp import accounts

pytestmark = pytest.mark.browser

SERIOUS = {"serious", "critical"}


def problems(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    results = Axe().run(page)
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']}: "
        + "; ".join(node["target"][0] for node in violation["nodes"][:3])
        for violation in results.response["violations"]
        if violation["impact"] in SERIOUS
    ]


def test_every_page_type_passes_axe_core(serve, page, real_redis):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0, IDLE_WARNING_SECONDS=0)
    found = {}
    for name, path in (
        ("start", "/"),
        ("resume", "/resume"),
        ("login", "/login"),
        ("register", "/register"),
        ("import", "/import"),
        ("gone", "/c/no-such-conversation"),
    ):
        page.goto(app.url + path)
        found[name] = problems(page)
    page.goto(f"{app.url}/")
    send(page, "Is this page accessible?")
    found["conversation"] = problems(page)
    page.goto(f"{app.url}/search?q=accessible")
    found["search"] = problems(page)
    page.go_back()
    conversation_page = page.url
    page.get_by_role("link", name="Share…").click()
    page.get_by_role("button", name="Make a share link").click()
    found["share links"] = problems(page)
    page.goto(page.locator("ul.share-links input").first.input_value())
    found["share link"] = problems(page)
    page.goto(conversation_page)
    page.get_by_role("button", name="Get a resume code").click()
    found["resume code"] = problems(page)
    end_session(real_redis, conversation_id(page))
    page.reload()
    expect(page.get_by_text("Where were we?")).to_be_visible()
    found["where were we"] = problems(page)

    register(page, app.url, "axeadmin")
    accounts.make_admin(real_redis, accounts.find_user(real_redis, "axeadmin"))
    page.goto(f"{app.url}/admin")
    found["admin"] = problems(page)
    assert {name: issues for name, issues in found.items() if issues} == {}


def test_the_idle_dialog_open_passes_axe_core(serve, page):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0, SESSION_IDLE_SECONDS=60, IDLE_WARNING_SECONDS=120)
    page.goto(f"{app.url}/")
    send(page, "I will step away now")
    page.reload()  # and do nothing: the dialog opens with a resume code
    expect(page.locator("dialog#idle-dialog")).to_be_visible()
    assert problems(page) == []


def test_the_check_finds_what_it_should(page):
    """The check is not blind: a button with no name and an image with no text are found."""
    page.set_content('<main><button></button><img src="data:,"></main>')
    found = " ".join(problems(page))
    assert "button-name" in found and "image-alt" in found


def test_a_skip_link_comes_first_and_a_reply_is_announced_once_when_done(serve, page):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0.2)
    page.goto(f"{app.url}/login")
    first = page.evaluate(
        """document.querySelector('a[href], button, input:not([type=hidden]), textarea, select')
             .textContent"""
    )
    assert first == "Skip to the content"  # the first stop of the Tab key
    skip = page.get_by_role("link", name="Skip to the content")
    expect(skip).not_to_be_in_viewport()  # out of sight until focused
    skip.focus()
    expect(skip).to_be_in_viewport()
    page.goto(f"{app.url}/")
    page.locator('textarea[name="text"]').fill("Say it once")
    page.locator('textarea[name="text"]').press("Enter")
    expect(page.locator("#run-text")).to_be_visible()
    assert page.locator("#run [aria-live], #run[aria-live]").count() == 0  # not chunk by chunk
    live = page.locator("#announcer[aria-live]")
    expect(live).to_be_empty()
    expect(page.locator("#run")).to_have_count(0)
    expect(live).to_have_text(re.compile(r"^The reply is done: You said: “Say it once”"))
