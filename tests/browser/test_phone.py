"""A phone, 360 px wide: no page scrolls sideways, the header's links and the message box
each keep to their lines. A screenshot of each page goes to test-output/phone-<page>.png."""

import pytest
from playwright.sync_api import Page

from tests.browser.test_lifecycle import register, send
from webapp import accounts

pytestmark = pytest.mark.browser

PHONE = {"width": 360, "height": 740}
LONG_QUESTION = "How do I keep a conversation when the server restarts and Redis does too? " * 3


def check_fits(page: Page, screenshot, name: str) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    wide = page.evaluate(
        """[...document.querySelectorAll('body *')]
            .filter((e) => e.getBoundingClientRect().right > innerWidth + 1)
            .filter((e) => { for (let n = e.parentElement; n; n = n.parentElement)
                               if (getComputedStyle(n).overflowX !== 'visible') return false;
                             return true; })
            .slice(0, 3).map((e) => e.tagName + '.' + e.className)"""
    )  # what sticks out, outside a box that scrolls by itself
    assert width[0] <= width[1], f"{name}: {width[0]} px wide on a {width[1]} px screen: {wide}"
    broken = page.evaluate(
        """[...document.querySelectorAll(
              '.site-header a, .site-header button, .site-header .model, .composer button, '
              + '.code, button.fork')]
            .filter((element) => element.getClientRects().length !== 1
                    || element.getBoundingClientRect().height > 2 * parseFloat(
                         getComputedStyle(element).lineHeight || 20))
            .map((element) => element.textContent.trim())"""
    )
    assert not broken, f"{name}: these break over lines: {broken}"
    screenshot(page, f"phone-{name}")


def test_every_page_fits_a_phone(serve, new_context, real_redis, screenshot):
    app = serve(OFFLINE_CHUNK_DELAY_SECONDS=0, IDLE_WARNING_SECONDS=0)
    page = new_context(viewport=PHONE).new_page()
    for name, path in (
        ("start", "/"),
        ("login", "/login"),
        ("register", "/register"),
        ("resume", "/resume"),
        ("gone", "/c/no-such-conversation"),
    ):
        page.goto(app.url + path)
        check_fits(page, screenshot, name)
    page.goto(f"{app.url}/")
    send(page, LONG_QUESTION)
    check_fits(page, screenshot, "conversation")
    page.goto(f"{app.url}/search?q=" + LONG_QUESTION.split()[0])
    check_fits(page, screenshot, "search")
    page.go_back()
    conversation_page = page.url
    page.get_by_role("link", name="Share…").click()
    page.get_by_role("button", name="Make a share link").click()
    check_fits(page, screenshot, "share-links")
    page.goto(page.locator("ul.share-links input").first.input_value())
    check_fits(page, screenshot, "share-link")
    page.goto(conversation_page)
    page.get_by_role("button", name="Get a resume code").click()
    check_fits(page, screenshot, "resume-code")

    register(page, app.url, "phoneadmin")
    accounts.make_admin(real_redis, accounts.find_user(real_redis, "phoneadmin"))
    page.goto(f"{app.url}/admin")
    check_fits(page, screenshot, "admin")
