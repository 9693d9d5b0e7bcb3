"""Journey "Admin clears a conversation": a guest chats; the admin (made with `resume-chat
create-admin`) logs in, finds the conversation in the console, clears it after confirming,
and sees the audit entry; the guest then finds the conversation gone, with the friendly page."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests import expiry
from tests.app_server import TEST_SECRET_KEY
from webapp import conversations, metrics, resume_codes
from webapp.conversations import Lifetimes

pytestmark = pytest.mark.browser

QUESTION = "What should an admin be able to see?"
ADMIN, PASSWORD = "root", "correct horse battery"
CONVERSATION_URL = re.compile(r"/c/([A-Za-z0-9_-]{8,64})(#latest)?$")


def create_admin(redis_url: str, instance_path: Path) -> None:
    """`resume-chat create-admin`, with the password on standard input, as an operator would."""
    result = subprocess.run(
        [Path(sys.executable).with_name("resume-chat"), "create-admin", ADMIN],
        input=f"{PASSWORD}\n",
        capture_output=True,
        text=True,
        env={
            "REDIS_URL": redis_url,
            "FLASK_SECRET_KEY": "x",
            "FLASK_INSTANCE_PATH": str(instance_path),
            "PATH": "/usr/bin:/bin",
        },
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def more_data(real_redis) -> None:
    """Other conversations (one parked under a resume code, one expired), and resume
    failures in a few past hours, so the console has something to draw."""
    lifetimes = Lifetimes(session_idle=1800, session_max=86400, transcript_retention=7 * 86400)
    for number in range(4):
        conversation_id = conversations.create_conversation(
            real_redis, f"guest:other{number}", lifetimes
        )
        if number == 2:
            conversation = conversations.get_conversation(real_redis, conversation_id)
            assert resume_codes.park(real_redis, TEST_SECRET_KEY, conversation, 3600)
        if number == 3:  # its session ended, its transcript is kept
            expiry.end_session(real_redis, conversation_id)
    now = time.time()
    for hours_ago, failures in ((20, 2), (13, 5), (7, 1), (2, 3)):
        for _ in range(failures):
            metrics.count_resume_failure(real_redis, "unknown", now=now - hours_ago * 3600)


def test_admin_clears_a_guests_conversation(
    app_server, real_redis, redis_server, new_context, screenshot, tmp_path
):
    guest = new_context().new_page()
    guest.goto(f"{app_server.url}/")
    guest.locator('textarea[name="text"]').fill(QUESTION)
    guest.get_by_role("button", name="Send").click()
    expect(guest).to_have_url(CONVERSATION_URL)
    conversation_url = guest.url.split("#")[0]
    conversation_id = CONVERSATION_URL.search(conversation_url)[1]
    expect(guest.locator("article.message.assistant")).to_have_count(1)
    expect(guest.locator("#run")).to_have_count(0)  # the reply is finished

    create_admin(redis_server.url, tmp_path)
    more_data(real_redis)

    admin = new_context(viewport={"width": 1280, "height": 900}).new_page()
    blocked = []
    admin.on(
        "console",
        lambda message: (
            blocked.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    admin.goto(f"{app_server.url}/admin")
    expect(admin).to_have_url(re.compile(r"/login\?next=/admin$"))
    admin.get_by_label("Username").fill(ADMIN)
    admin.get_by_label("Password").fill(PASSWORD)
    admin.get_by_role("button", name="Log in").click()
    expect(admin).to_have_url(f"{app_server.url}/admin")
    expect(admin.get_by_role("heading", name="Admin console")).to_be_visible()
    expect(admin.locator("svg.chart")).to_have_count(2)
    expect(admin.locator("svg.chart title").first).to_have_text(
        "Conversations by state: active 3, parked 1, expired 1"
    )

    row = admin.locator(f"#conversation-{conversation_id}")
    expect(row).to_be_visible()
    expect(row.locator(".state")).to_have_text("active")
    expect(row.locator("td").nth(3)).to_have_text("2")

    row.get_by_role("button", name="Clear…").click()
    expect(
        admin.get_by_role("heading", name=f"Clear conversation {conversation_id}?")
    ).to_be_visible()
    admin.get_by_role("button", name="Yes, clear it").click()

    expect(admin).to_have_url(re.compile(r"/admin#audit$"))
    expect(admin.locator(".flash")).to_have_text(
        re.compile(r"^Cleared 1 conversation \(\d+ Redis keys\)\.$")
    )
    expect(admin.locator(f"#conversation-{conversation_id}")).to_have_count(0)
    entry = admin.locator(".audit-table tbody tr").first
    expect(entry.locator("td").nth(1)).to_have_text(ADMIN)
    expect(entry.locator("td").nth(2)).to_have_text("clear conversation")
    expect(entry.locator("td").nth(3)).to_have_text(conversation_id)
    expect(admin.locator("svg.chart title").first).to_have_text(
        "Conversations by state: active 2, parked 1, expired 1"
    )
    admin.evaluate("window.scrollTo(0, 0)")
    screenshot(admin, "admin")
    assert blocked == []  # nothing on the page needed an inline style or script

    guest.goto(conversation_url)
    expect(guest.get_by_role("heading", level=1)).to_have_text("I couldn't find that conversation")
    screenshot(guest, "admin-cleared-guest")
