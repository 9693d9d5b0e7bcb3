"""No id can be probed: an unknown conversation id, another guest's and an account's get the
same answer, page for page, and move no counter and no key. A browser whose login ran out
is asked to log in again, whatever the id."""

import re

import pytest

from tests.attack.test_quotas import everything
from tests.conftest import CSRF_FIELD
from tests.test_auth import log_in, register
from webapp import accounts
from webapp.storage import keys

PER_REQUEST = re.compile(r'(name="csrf_token" value=|nonce=)"[^"]+"')
"""What differs between two answers of one page anyway: the CSRF token, the CSP nonce."""


def same_page(response, conversation_id: str) -> str:
    """The page as it would be for any id: the id it was asked for, and what differs per
    request anyway, left out."""
    return PER_REQUEST.sub(r'\1"…"', response.text).replace(conversation_id, "<id>")


@pytest.fixture
def ids(app, chat_factory):
    """An unknown id, another guest's conversation, an account's conversation."""
    guest = chat_factory(app)
    account = chat_factory(app)
    register(account.client, "ada")
    return {
        "unknown": "n0-such-conversation-id",
        "guest's": guest.start_conversation("a guest's secret"),
        "account's": account.start_conversation("an account's secret"),
    }


@pytest.mark.parametrize("stranger", ["guest", "account"])
def test_unknown_and_other_peoples_ids_get_the_same_404(
    app, chat_factory, ids, real_redis, stranger
):
    visitor = chat_factory(app)
    if stranger == "account":
        register(visitor.client, "eve")
    visitor.client.get("/")  # the visitor's own cookie, made before anything is compared
    before = everything(real_redis)
    csrf = CSRF_FIELD.search(visitor.client.get("/").text)[1]

    pages = {name: visitor.client.get(f"/c/{cid}") for name, cid in ids.items()}
    sends = {
        name: visitor.client.post(f"/c/{cid}/messages", data={"csrf_token": csrf, "text": "hi"})
        for name, cid in ids.items()
    }
    for answers in (pages, sends):
        assert {response.status_code for response in answers.values()} == {404}
        assert len({same_page(answers[name], cid) for name, cid in ids.items()}) == 1
    assert "secret" not in str([response.text for response in pages.values()])
    assert everything(real_redis) == before  # no counter moved, no key written


def test_a_browser_whose_login_ran_out_is_asked_to_log_in_whatever_the_id(
    app, chat_factory, ids, real_redis
):
    visitor = chat_factory(app)
    register(visitor.client, "bob")
    user = accounts.find_user(real_redis, "bob")
    real_redis.delete(keys.user_logins(user.id))  # every login of bob ends (it ran out)
    for cid in ids.values():
        response = visitor.client.get(f"/c/{cid}")
        assert response.status_code == 302
        assert response.location.startswith("/login?next=")
    log_in(visitor.client, "bob")
    assert visitor.client.get(f"/c/{ids['unknown']}").status_code == 404
