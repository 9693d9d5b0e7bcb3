"""One visitor can't fill Redis: forks, new conversations and resume codes past their
quotas get the clear 429 page, keep what was typed, and write nothing."""

import re
import threading
from html import unescape

import pytest

from tests.conftest import CSRF_FIELD, Chat
from tests.test_admin import log_in as log_in_as
from tests.test_admin import make_user
from tests.test_auth import register
from webapp import conversations, owners, quotas, rate_limits
from webapp.config import DEFAULTS, settings_of
from webapp.storage import keys

FORK_THROUGH = 0


def fork(chat: Chat, conversation_id: str, csrf: str):
    return chat.client.post(
        f"/c/{conversation_id}/fork", data={"csrf_token": csrf, "through": FORK_THROUGH}
    )


def csrf_of(chat: Chat, conversation_id: str) -> str:
    return CSRF_FIELD.search(chat.client.get(f"/c/{conversation_id}").text)[1]


def everything(r) -> dict:
    """Every key and its whole value (DUMP), to tell that nothing was written."""
    return {key: r.dump(key) for key in r.scan_iter(count=1000)}


def test_forks_past_the_limit_get_the_429_page_and_add_no_key(
    make_app, chat_factory, real_redis, monkeypatch
):
    # 10,000 requests take about a minute here: the window and the session last an hour, so
    # that neither runs out (letting a fork through, counting a late return) before they end.
    monkeypatch.setattr(rate_limits, "MINUTE", 3600)
    chat = chat_factory(make_app(NEW_CONVERSATIONS_PER_MINUTE=5, SESSION_IDLE_SECONDS=3600))
    original = chat.start_conversation("a conversation worth forking")
    csrf = csrf_of(chat, original)
    assert [fork(chat, original, csrf).status_code for _ in range(4)] == [302] * 4
    before = everything(real_redis)

    refused = [fork(chat, original, csrf) for _ in range(10_000)]

    assert {response.status_code for response in refused} == {429}
    assert refused[0].headers["Retry-After"] == "3600"  # the window's length
    assert quotas.NEW_CONVERSATIONS_TEXT in unescape(refused[0].text)
    assert everything(real_redis) == before  # not a key more, not a byte changed


def test_the_limit_on_new_conversations_opens_again_a_minute_later(
    make_app, chat_factory, monkeypatch
):
    chat = chat_factory(make_app(NEW_CONVERSATIONS_PER_MINUTE=2))
    chat.start_conversation("one")
    chat.start_conversation("two")
    refused = chat.start("three, too soon")
    assert refused.status_code == 429
    assert "three, too soon" in refused.text  # the typed text is kept
    later = rate_limits.clock() + rate_limits.MINUTE
    monkeypatch.setattr(rate_limits, "clock", lambda: later)
    assert chat.start("three, a minute later").status_code == 302


@pytest.mark.parametrize("account", [False, True], ids=["guest", "account"])
def test_live_conversations_are_capped_until_one_is_deleted(
    make_app, chat_factory, real_redis, account
):
    app = make_app(LIVE_CONVERSATIONS_PER_GUEST=3, LIVE_CONVERSATIONS_PER_ACCOUNT=4)
    chat = chat_factory(app)
    if account:
        register(chat.client, "keeper")
    most = 4 if account else 3
    ids = [chat.start_conversation(f"conversation {n}") for n in range(most)]
    csrf = csrf_of(chat, ids[0])  # the page seen (its reply is no longer news in the list)
    before = everything(real_redis)

    refused = chat.start("one more than I may keep")
    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers  # waiting does not help: deleting does
    text = unescape(refused.text)
    assert f"You have {most} conversations, the most you can keep" in text
    assert ("an account keeps more" in text) is not account
    assert "one more than I may keep" in refused.text
    assert fork(chat, ids[0], csrf).status_code == 429
    assert everything(real_redis) == before

    chat.client.post(f"/c/{ids[0]}/delete", data={"csrf_token": csrf, "confirm": "yes"})
    assert chat.start("now there is room").status_code == 302


def test_conversations_created_together_cannot_pass_the_live_cap(real_redis):
    """Twenty at once, five allowed: the count and the new entry are one script."""
    limits = settings_of({**DEFAULTS, "LIVE_CONVERSATIONS_PER_ACCOUNT": 5}).quotas
    lifetimes = settings_of(DEFAULTS).lifetimes
    owner = owners.of_user("u1")
    created, refused = [], []
    start = threading.Barrier(20)

    def create():
        start.wait()
        try:
            with quotas.new_conversation(
                real_redis, limits, owner, "203.0.113.1", lifetimes.transcript_retention
            ) as conversation_id:
                conversations.create_conversation(real_redis, owner, lifetimes, conversation_id)
            created.append(conversation_id)
        except quotas.QuotaReached:
            refused.append(1)

    threads = [threading.Thread(target=create) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(created), len(refused)) == (5, 15)
    assert set(real_redis.zrange(keys.owner_conversations(owner), 0, -1)) == set(created)


def test_fresh_cookies_do_not_reset_the_guests_limit_on_new_conversations(make_app, chat_factory):
    app = make_app(GUEST_NEW_CONVERSATIONS_PER_ADDRESS_PER_MINUTE=3)
    started = [chat_factory(app).start(f"fresh cookie {n}").status_code for n in range(6)]
    assert started == [302] * 3 + [429] * 3
    elsewhere = chat_factory(app)
    elsewhere.client.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    assert elsewhere.start("from another address").status_code == 302
    account = chat_factory(app)
    register(account.client, "ada")
    assert account.start("an account on the same address").status_code == 302


def test_a_conversation_refused_its_model_call_leaves_nothing_behind(
    make_app, chat_factory, real_redis
):
    """The model-call quota refuses after the new-conversation quota took its slot: the slot
    and the index entry are given back."""
    chat = chat_factory(make_app(MODEL_CALLS_PER_MINUTE=1, NEW_CONVERSATIONS_PER_MINUTE=5))
    chat.start_conversation("the one call")
    before = everything(real_redis)
    for n in range(3):
        assert chat.start(f"no call left {n}").status_code == 429
    after = everything(real_redis)
    assert after == before


def test_resume_codes_are_limited_per_hour(make_app, chat_factory, real_redis):
    chat = chat_factory(make_app(RESUME_CODES_PER_HOUR=3))
    conversation_id = chat.start_conversation()
    csrf = csrf_of(chat, conversation_id)
    park = f"/c/{conversation_id}/park"
    for _ in range(3):
        assert "Your resume code" in chat.client.post(park, data={"csrf_token": csrf}).text
    codes = len(list(real_redis.scan_iter(match=keys.RESUME_CODES_PATTERN)))

    refused = chat.client.post(park, data={"csrf_token": csrf})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "3600"
    assert quotas.RESUME_CODES_TEXT in unescape(refused.text)
    asked = chat.client.post(
        park, data={"csrf_token": csrf}, headers={"Accept": "application/json"}
    )
    assert (asked.status_code, asked.json) == (429, {"error": quotas.RESUME_CODES_TEXT})
    assert len(list(real_redis.scan_iter(match=keys.RESUME_CODES_PATTERN))) == codes


def test_the_console_shows_an_owners_usage(make_app, chat_factory, real_redis):
    app = make_app(
        MODEL_CALLS_PER_MINUTE=20,
        NEW_CONVERSATIONS_PER_MINUTE=7,
        LIVE_CONVERSATIONS_PER_GUEST=9,
        RESUME_CODES_PER_HOUR=30,
    )
    guest = chat_factory(app)
    first = guest.start_conversation("one")
    guest.start_conversation("two")
    owner = conversations.get_conversation(real_redis, first).owner
    make_user(real_redis, "root", admin=True)
    admin = log_in_as(app.test_client(), "root")
    page = unescape(admin.get("/admin", query_string={"owner": owner}).text)
    usage = {
        what: (used, allowed)
        for what, used, allowed in re.findall(
            r'<th scope="row">([^<]+)</th><td class="num">([\d,]+)</td><td class="num">([\d,]+)',
            page,
        )
    }
    assert usage == {
        "Live conversations": ("2", "9"),
        "Model calls this minute": ("2", "20"),
        "New conversations this minute": ("2", "7"),
        "Resume codes this hour": ("0", "30"),
    }
