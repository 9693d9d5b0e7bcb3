"""Journeys 4, 5, 6 and 9: a long absence, starting over, the server that lost it, and a
login that ran out while typing; lifetimes set to seconds by settings."""

import re
import time

import pytest
from playwright.sync_api import Page, expect

from webapp.storage import keys

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"


@pytest.fixture
def serve(serve):
    """Apps whose sessions last seconds, without the idle dialog (it would park them at once)."""
    return lambda **settings: serve(
        **{"OFFLINE_CHUNK_DELAY_SECONDS": 0, "IDLE_WARNING_SECONDS": 0, **settings}
    )


def wait_until(condition, timeout=15):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition was not met in time"
        time.sleep(0.1)


def send(page: Page, text: str) -> None:
    """Send ``text`` and wait for the reply to be finished on the page that follows (its
    scripts have run: the box after it is ready to keep a draft)."""
    page.locator('textarea[name="text"]').fill(text)
    with page.expect_navigation():
        page.get_by_role("button", name="Send").click()
    expect(page.locator("#run")).to_have_count(0, timeout=10_000)


def register(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/register")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()


def conversation_id(page: Page) -> str:
    return re.search(r"/c/([A-Za-z0-9_-]+)", page.url)[1]


def test_long_absence_where_were_we_then_catch_me_up(serve, page, real_redis, screenshot):
    app = serve(SESSION_IDLE_SECONDS=8)
    register(page, app.url, "traveller")
    page.goto(f"{app.url}/")
    send(page, "I am planning a cycling trip along the Danube.")
    send(page, "I have two weeks in June.")
    cid = conversation_id(page)
    wait_until(lambda: not real_redis.exists(keys.conversation_session(cid)))

    page.reload()
    banner = page.get_by_role("region", name="Where were we?")
    expect(banner).to_be_visible()
    expect(page.locator('textarea[name="text"]')).to_have_count(0)  # the box waits
    expect(page.locator("article.message")).to_have_count(4)  # the old messages are there
    screenshot(page, "where-were-we")

    banner.get_by_role("button", name="Catch me up").click()
    expect(page.get_by_text("Caught up from a summary")).to_be_visible()
    page.get_by_text("Read the summary").click()
    expect(page.locator(".note .text")).to_contain_text("Goal: I am planning a cycling trip")
    send(page, "Which bike should I take?")
    expect(page.locator("article.message.assistant").last).to_contain_text(
        "From my notes of our earlier conversation: Goal: I am planning a cycling trip"
    )
    screenshot(page, "caught-up")


def test_start_fresh_then_delete_the_old_one(serve, page, real_redis):
    app = serve(SESSION_IDLE_SECONDS=6)
    page.goto(f"{app.url}/")
    send(page, "An old topic about knitting")
    cid = conversation_id(page)
    wait_until(lambda: not real_redis.exists(keys.conversation_session(cid)))
    page.reload()
    page.get_by_role("link", name="Start fresh").click()
    expect(page.get_by_role("heading", name="Start a new chat")).to_be_visible()
    expect(page.locator(".conversations li")).to_contain_text("An old topic about knitting")

    page.goto(f"{app.url}/c/{cid}")
    page.get_by_role("button", name="Delete it now").click()
    expect(page.get_by_role("heading", name="Delete this conversation?")).to_be_visible()
    page.get_by_role("button", name="Delete it").click()
    expect(page.locator(".conversations li")).to_have_count(0)


def test_the_server_lost_it_catch_up_from_this_browsers_copy(serve, page, real_redis, screenshot):
    app = serve()
    page.goto(f"{app.url}/")
    send(page, "Remind me to water the fern on Fridays.")
    cid = conversation_id(page)
    real_redis.flushdb()  # Redis was wiped overnight

    page.goto(f"{app.url}/c/{cid}")
    expect(page.get_by_role("heading", name="I couldn't find that conversation")).to_be_visible()
    offer = page.get_by_role("button", name="Catch me up from this browser's copy")
    expect(offer).to_be_visible()
    screenshot(page, "gone")
    offer.click()
    expect(page.get_by_text("Caught up from this browser's copy")).to_be_visible()
    assert conversation_id(page) != cid
    send(page, "What was that about?")
    expect(page.locator("article.message.assistant").last).to_contain_text(
        "From my notes of our earlier conversation: Goal: Remind me to water the fern"
    )


def test_a_browser_without_a_copy_is_only_offered_to_start_fresh(serve, page, new_context):
    app = serve()
    page.goto(f"{app.url}/c/never-existed")
    expect(page.get_by_role("heading", name="I couldn't find that conversation")).to_be_visible()
    expect(page.get_by_role("button", name="Catch me up from this browser's copy")).to_be_hidden()
    expect(page.get_by_role("link", name="Start fresh")).to_be_visible()


def test_signed_out_while_typing_lands_back_with_the_draft(serve, page, real_redis):
    app = serve(LOGIN_SECONDS=8)
    register(page, app.url, "typist")
    page.goto(f"{app.url}/")
    send(page, "Draft a letter to my landlord.")
    cid = conversation_id(page)
    page.locator('textarea[name="text"]').press_sequentially("Dear Mr Smith, the heating")
    user_id = real_redis.hget(keys.USERNAMES, "typist")
    wait_until(lambda: real_redis.exists(keys.conversation_draft(cid)))
    wait_until(
        lambda: all(
            s < time.time()
            for _, s in real_redis.zrange(keys.user_logins(user_id), 0, -1, withscores=True)
        )
    )

    page.reload()
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Username").fill("typist")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(rf"/c/{cid}$"))
    expect(page.locator('textarea[name="text"]')).to_have_value("Dear Mr Smith, the heating")
