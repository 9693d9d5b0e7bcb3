"""Share links over HTTP: a read-only snapshot anyone may open, with no owner identity and
no form but "Continue in my own chat"; the owner lists and revokes, admins too; a revoked,
ended, unknown or deleted conversation's link gets the friendly 404."""

import re
import time

import pytest

from tests.conftest import CSRF_FIELD, Chat
from tests.test_admin import log_in, make_user
from webapp import conversations, shares
from webapp.storage import keys

LINK = re.compile(r'value="http://localhost/s/([A-Za-z0-9_-]{32})"')


def make_link(client, conversation_id):
    page = f"/c/{conversation_id}/shares"
    csrf = CSRF_FIELD.search(client.get(page).text)[1]
    response = client.post(page, data={"csrf_token": csrf})
    assert response.status_code == 302, response.text
    return LINK.findall(client.get(page).text)[0]


def post_form(client, page, action, **fields):
    csrf = CSRF_FIELD.search(client.get(page).text)[1]
    return client.post(action, data={"csrf_token": csrf, **fields})


@pytest.fixture
def shared(chat, client):
    conversation_id = chat.start_conversation("Plan a picnic by the river")
    return conversation_id, make_link(client, conversation_id)


def test_anyone_reads_the_snapshot_without_the_owners_identity(shared, app, real_redis):
    conversation_id, token = shared
    owner = real_redis.hget(keys.conversation_meta(conversation_id), "owner")
    response = app.test_client().get(f"/s/{token}")
    assert response.status_code == 200
    assert response.headers["X-Robots-Tag"] == "noindex, nofollow"
    assert response.headers["Cache-Control"] == "no-store"
    page = response.text
    assert '<meta name="robots" content="noindex, nofollow">' in page
    assert "Plan a picnic by the river" in page and "You said" in page
    assert owner not in page and owner.split(":", 1)[1] not in page
    assert conversation_id not in page
    main = page[page.index('<main id="main"') :]
    assert re.findall(r'<form[^>]*action="([^"]+)"', main) == [f"/s/{token}/continue"]
    assert "Your conversations" not in page  # no list of anyone's conversations


def test_the_snapshot_is_the_conversation_as_it_was_when_shared(shared, chat):
    conversation_id, token = shared
    chat.send(conversation_id, "Add a thermos of tea")
    chat.wait_for_reply(conversation_id)
    assert "thermos" in chat.client.get(f"/c/{conversation_id}").text
    assert "thermos" not in chat.client.get(f"/s/{token}").text


def test_continue_in_my_own_chat_forks_the_snapshot_into_the_viewers_identity(
    shared, app, real_redis
):
    conversation_id, token = shared
    viewer = app.test_client()
    response = post_form(viewer, f"/s/{token}", f"/s/{token}/continue")
    assert response.status_code == 302
    copy_id = Chat.conversation_id_of(response)
    assert copy_id != conversation_id
    page = viewer.get(f"/c/{copy_id}")
    assert page.status_code == 200 and "Plan a picnic by the river" in page.text
    copied = [m.content for m in conversations.read_messages(real_redis, copy_id)]
    assert copied == [m.content for m in conversations.read_messages(real_redis, conversation_id)]
    original = conversations.get_conversation(real_redis, conversation_id)
    assert conversations.get_conversation(real_redis, copy_id).owner != original.owner
    assert real_redis.hget(keys.conversation_meta(copy_id), "forked_from") is None
    Chat(viewer).send(copy_id, "And now it is mine")  # a live session, to carry on
    assert Chat(viewer).wait_for_reply(copy_id) == "done"


def test_the_owner_lists_and_revokes_and_the_link_then_404s(shared, client, app):
    conversation_id, token = shared
    second = make_link(client, conversation_id)
    page = f"/c/{conversation_id}/shares"
    assert LINK.findall(client.get(page).text) == [second, token]  # newest first
    response = post_form(client, page, f"/c/{conversation_id}/shares/{token}/revoke")
    assert response.status_code == 302
    assert LINK.findall(client.get(page).text) == [second]
    gone = app.test_client().get(f"/s/{token}")
    assert gone.status_code == 404 and "find that page" in gone.text
    assert app.test_client().get(f"/s/{second}").status_code == 200


def test_another_visitor_can_neither_list_nor_revoke(shared, app):
    conversation_id, token = shared
    stranger = app.test_client()
    assert stranger.get(f"/c/{conversation_id}/shares").status_code == 404
    csrf = CSRF_FIELD.search(stranger.get("/").text)[1]
    revoke = stranger.post(f"/c/{conversation_id}/shares/{token}/revoke", data={"csrf_token": csrf})
    assert revoke.status_code == 404
    assert stranger.get(f"/s/{token}").status_code == 200


def test_unknown_and_malformed_tokens_get_the_same_404(app):
    client = app.test_client()
    for token in ("x" * 32, "not-a-token", "../../etc"):
        response = client.get(f"/s/{token}")
        assert response.status_code == 404 and "find that page" in response.text


def test_a_link_ends_with_its_lifetime(make_app):
    client = make_app(SHARE_LINK_SECONDS=1).test_client()
    conversation_id = Chat(client).start_conversation("Short-lived")
    token = make_link(client, conversation_id)
    assert client.get(f"/s/{token}").status_code == 200
    time.sleep(1.2)
    assert client.get(f"/s/{token}").status_code == 404
    assert LINK.findall(client.get(f"/c/{conversation_id}/shares").text) == []


def test_deleting_the_conversation_ends_its_links(shared, client, real_redis):
    conversation_id, token = shared
    page = f"/c/{conversation_id}"
    response = post_form(client, page, f"{page}/delete", confirm="yes")
    assert response.status_code in (302, 303), response.text
    assert conversations.get_conversation(real_redis, conversation_id) is None
    assert client.get(f"/s/{token}").status_code == 404
    assert not real_redis.exists(keys.share(token))
    assert real_redis.zscore(keys.SHARES, token) is None


def test_past_the_most_links_the_next_is_refused_and_writes_nothing(make_app, real_redis):
    client = make_app(SHARE_LINKS_PER_OWNER=2).test_client()
    conversation_id = Chat(client).start_conversation("Popular")
    make_link(client, conversation_id)
    make_link(client, conversation_id)
    before = sorted(real_redis.keys("rc:share*"))
    page = f"/c/{conversation_id}/shares"
    refused = post_form(client, page, page)
    assert refused.status_code == 429 and "Retry-After" not in refused.headers
    assert "2 share links, the most you can keep" in refused.text
    assert sorted(real_redis.keys("rc:share*")) == before


def test_admins_see_every_link_and_revoke_one_audited(shared, app, real_redis):
    conversation_id, token = shared
    make_user(real_redis, "root", admin=True)
    admin_client = log_in(app.test_client(), "root")
    listing = admin_client.get("/admin/shares").text
    assert conversation_id in listing and f"/s/{token}" in listing and "guest" in listing
    asked = post_form(admin_client, "/admin/shares", "/admin/shares/revoke", token=token)
    assert asked.status_code == 200 and "Revoke this share link?" in asked.text
    assert app.test_client().get(f"/s/{token}").status_code == 200  # not before confirming
    done = post_form(
        admin_client, "/admin/shares", "/admin/shares/revoke", token=token, confirm="yes"
    )
    assert done.status_code == 302
    assert app.test_client().get(f"/s/{token}").status_code == 404
    assert "revoke share link" in admin_client.get("/admin").text
    again = post_form(
        admin_client, "/admin/shares", "/admin/shares/revoke", token=token, confirm="yes"
    )
    assert again.status_code == 404
    assert shares.newest(real_redis, 10) == []
