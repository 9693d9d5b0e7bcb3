"""The chat pages over HTTP: sending, reading, paging, and every bad input."""

from html import unescape

import pytest

from tests.conftest import stored_keys
from webapp import conversations
from webapp.storage import keys


def stored_messages(real_redis, conversation_id):
    return conversations.read_messages(real_redis, conversation_id)


def test_start_page_offers_a_new_chat_and_names_the_offline_model(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "Start a new chat" in page.text
    assert "offline model" in page.text
    assert "None yet" in page.text


def test_first_message_starts_a_conversation_with_a_reply(chat, client, real_redis):
    response = chat.start("How do I keep a sourdough starter alive?")
    assert response.status_code == 302
    conversation_id = chat.conversation_id_of(response)
    assert chat.wait_for_reply(conversation_id) == "done"
    page = client.get(response.location)
    assert page.status_code == 200
    assert "How do I keep a sourdough starter alive?" in page.text
    assert "You said:" in page.text
    assert [m.role for m in stored_messages(real_redis, conversation_id)] == ["user", "assistant"]


def test_sending_in_a_conversation_stores_message_and_reply(chat, client, real_redis):
    conversation_id = chat.start_conversation("First question")
    response = chat.send(conversation_id, "Second question")
    assert response.status_code == 302
    assert response.location.endswith(f"/c/{conversation_id}#latest")
    chat.wait_for_reply(conversation_id)
    stored = stored_messages(real_redis, conversation_id)
    assert [m.content for m in stored if m.role == "user"] == ["First question", "Second question"]
    assert "This is message 2 of our conversation" in stored[-1].content


def test_a_resubmitted_form_is_stored_once(chat, client, real_redis):
    conversation_id = chat.start_conversation()
    fields = chat.form_fields(f"/c/{conversation_id}")
    for _ in range(2):
        client.post(f"/c/{conversation_id}/messages", data={**fields, "text": "Only once please"})
        chat.wait_for_reply(conversation_id)
    assert [m.content for m in stored_messages(real_redis, conversation_id)].count(
        "Only once please"
    ) == 1
    assert len(stored_messages(real_redis, conversation_id)) == 4


def test_user_text_is_escaped_and_replies_are_sanitised(chat, client):
    conversation_id = chat.start_conversation(
        '<script>alert("x")</script> <img src=x onerror=alert(1)>'
    )
    page = client.get(f"/c/{conversation_id}").text
    assert "<script>alert" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert" in page


@pytest.mark.parametrize("text", ["", "   \n  "])
def test_empty_message_is_refused_and_nothing_stored(chat, client, real_redis, text):
    response = chat.start(text)
    assert response.status_code == 400
    assert "Type a message before sending." in response.text
    assert stored_keys(real_redis) == set()


def test_oversized_message_is_refused_with_the_text_kept(chat, client, real_redis):
    conversation_id = chat.start_conversation()
    before = stored_messages(real_redis, conversation_id)
    too_long = "y" * 16_001
    response = chat.send(conversation_id, too_long)
    assert response.status_code == 400
    assert "the limit is 16,000" in response.text
    assert too_long in response.text  # the draft is not lost
    assert stored_messages(real_redis, conversation_id) == before


@pytest.mark.parametrize(
    "character", ["z", "é", "漢", "😀"], ids=["ascii", "latin", "cjk", "emoji"]
)
def test_a_message_at_the_limit_is_accepted_in_any_script(chat, real_redis, character):
    """16,000 characters of one to four bytes of UTF-8, percent-encoded as a browser sends a
    form, fit in the body limit."""
    conversation_id = chat.start_conversation()
    assert chat.send(conversation_id, character * 16_000).status_code == 302
    chat.wait_for_reply(conversation_id)
    assert stored_messages(real_redis, conversation_id)[2].content == character * 16_000


def test_a_body_over_the_limit_gets_a_clear_413_and_a_way_back(chat, app, real_redis):
    conversation_id = chat.start_conversation()
    before = stored_messages(real_redis, conversation_id)
    response = chat.send(conversation_id, "w" * (app.config["MAX_CONTENT_LENGTH"] + 1))
    assert response.status_code == 413
    page = unescape(response.text)
    assert "too much to send" in page
    assert "what you typed is still in this browser" in page
    assert f'href="/c/{conversation_id}"' in page
    assert stored_messages(real_redis, conversation_id) == before


def test_unknown_conversation_is_a_friendly_404(client):
    response = client.get("/c/does-not-exist")
    assert response.status_code == 404
    assert "I couldn't find that conversation" in unescape(response.text)


def test_another_browsers_conversation_is_a_404(app, chat, chat_factory, real_redis):
    conversation_id = chat.start_conversation("private thoughts")
    stranger = chat_factory(app)
    page = stranger.client.get(f"/c/{conversation_id}")
    assert page.status_code == 404
    assert "private thoughts" not in page.text
    fields = stranger.form_fields("/")
    post = stranger.client.post(
        f"/c/{conversation_id}/messages", data={**fields, "text": "let me in"}
    )
    assert post.status_code == 404
    assert len(stored_messages(real_redis, conversation_id)) == 2


def test_conversation_page_shows_newest_50_with_a_link_to_earlier(chat, client, real_redis):
    conversation_id = chat.start_conversation("message number 0")
    for i in range(1, 30):
        chat.send(conversation_id, f"message number {i}")
        chat.wait_for_reply(conversation_id)
    page = client.get(f"/c/{conversation_id}").text
    assert page.count('class="message ') == 50
    assert "message number 4<" not in page
    assert "message number 5<" in page
    assert f"/c/{conversation_id}?before=10" in page
    earlier = client.get(f"/c/{conversation_id}?before=10").text
    assert earlier.count('class="message ') == 10
    assert "message number 0<" in earlier
    assert "Back to the latest messages" in earlier


def test_start_page_lists_this_browsers_conversations(chat, client):
    chat.start_conversation("Plan a trip to Lisbon in spring")
    page = client.get("/").text
    assert "Plan a trip to Lisbon in spring" in page


def test_a_conversation_gone_from_redis_is_a_404_not_an_error(chat, client, real_redis):
    conversation_id = chat.start_conversation()
    real_redis.delete(*keys.conversation_keys(conversation_id))
    assert client.get(f"/c/{conversation_id}").status_code == 404
    assert chat.client.get("/").status_code == 200


def test_pages_carry_the_security_headers(client):
    response = client.get("/")
    policy = response.headers["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_guest_cookie_is_httponly_and_samesite_lax(client):
    response = client.get("/")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
