"""A visitor's privacy in the browser: what it keeps goes when it should (deleting a
conversation removes its copy and draft from the browser's storage, logging out removes
every copy and draft), and a hostile next= can't send it to another site after login."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_lifecycle import PASSWORD, conversation_id, register, send

pytestmark = pytest.mark.browser

SECRET = "My bank PIN is 4321"


def kept(page: Page) -> dict:
    """This browser's storage for the site: key -> value."""
    return page.evaluate("Object.fromEntries(Object.entries(localStorage))")


def ask_to_delete(page: Page, conversation_id: str) -> None:
    """Post the conversation's Delete form, as its "Delete it now" button does."""
    page.evaluate(
        """(id) => {
          const form = document.createElement("form");
          form.method = "post";
          form.action = `/c/${id}/delete`;
          form.append(document.querySelector("input[name=csrf_token]").cloneNode());
          document.body.append(form);
          form.submit();
        }""",
        conversation_id,
    )


@pytest.fixture
def app(serve):
    return serve(OFFLINE_CHUNK_DELAY_SECONDS=0, IDLE_WARNING_SECONDS=0)


def test_deleting_a_conversation_forgets_its_copy_and_draft_here(app, page):
    page.goto(f"{app.url}/")
    send(page, SECRET)
    doomed = conversation_id(page)
    page.locator('textarea[name="text"]').press_sequentially("and my card number is")
    page.goto(f"{app.url}/")
    send(page, "Something else entirely")
    other = conversation_id(page)
    assert {f"rc:copy:{doomed}", f"rc:draft:/c/{doomed}/draft", f"rc:copy:{other}"} <= set(
        kept(page)
    )

    page.goto(f"{app.url}/c/{doomed}")
    ask_to_delete(page, doomed)
    expect(page.get_by_role("heading", name="Delete this conversation?")).to_be_visible()
    page.get_by_role("button", name="Delete it").click()
    expect(page.get_by_role("heading", name="Start a new chat")).to_be_visible()
    storage = kept(page)
    assert not [key for key in storage if doomed in key], storage
    assert f"rc:copy:{other}" in storage  # the others stay
    assert SECRET not in str(storage)


def test_logging_out_forgets_every_copy_and_draft(app, page, new_context):
    register(page, app.url, "leaver")
    page.goto(f"{app.url}/")
    send(page, SECRET)
    page.locator('textarea[name="text"]').press_sequentially("half a thought")
    assert any(key.startswith("rc:copy:") for key in kept(page))
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    assert kept(page) == {}
    page.goto(f"{app.url}/")
    assert SECRET not in page.content()


@pytest.mark.parametrize("target", ["/\\evil.example/", "/%09/evil.example", "//evil.example"])
def test_a_hostile_next_leaves_the_browser_on_this_site_after_login(app, page, target):
    """The browser, not only the Location header: after logging in with a hostile next=, it
    is still on this site (Chromium reads "/\\evil" and "/\\t/evil" as another host)."""
    register(page, app.url, "redirected")
    page.get_by_role("button", name="Log out").click()
    page.goto(f"{app.url}/login?next={target}")
    page.get_by_label("Username").fill("redirected")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Start a new chat")).to_be_visible()
    assert page.url.startswith(app.url), page.url
