"""A conversation as its owner reads it: one round trip for the page, and a reply whose
writer died shown as interrupted, its text kept."""

import time

from tests.conftest import RUN_SETTINGS as SETTINGS
from tests.conftest import RoundTrips
from webapp import conversations, runs, transcripts
from webapp.conversations import Message
from webapp.storage import keys

OWNER = "guest:reader"
PAGE_SIZE = 50


def asked(r, conversation_id, lifetimes, text="Tell me about tides"):
    """The owner asks; the reply is started (and left running)."""
    message = Message(conversations.new_id(), "user", text, time.time())
    return runs.start_run(r, conversation_id, OWNER, lifetimes, SETTINGS, user_message=message)


def read_page(r, conversation_id, lifetimes):
    conversation = conversations.get_conversation(r, conversation_id)
    return transcripts.read_page(r, conversation, PAGE_SIZE, None, lifetimes, SETTINGS)


def test_the_page_of_a_conversation_read_once_is_one_round_trip(real_redis, lifetimes, monkeypatch):
    conversation_id = conversations.create_conversation(real_redis, OWNER, lifetimes)
    run = asked(real_redis, conversation_id, lifetimes)
    runs.add_chunk(real_redis, run, "High tide is at noon.", SETTINGS)
    runs.finish_run(real_redis, run, runs.DONE, lifetimes, SETTINGS)
    conversations.save_draft(real_redis, conversation_id, "And low tide?")
    read_page(real_redis, conversation_id, lifetimes)  # the reply is seen: the list's news
    conversation = conversations.get_conversation(real_redis, conversation_id)
    counted = RoundTrips(monkeypatch)

    page = transcripts.read_page(real_redis, conversation, PAGE_SIZE, None, lifetimes, SETTINGS)

    assert counted.count == 1
    assert [m.content for m in page.messages] == ["Tell me about tides", "High tide is at noon."]
    assert (page.first_index, page.run.status, page.draft) == (0, runs.DONE, "And low tide?")
    assert page.session is not None and page.state == "active"


def test_a_reply_whose_writer_died_is_shown_interrupted_with_its_text(redis, lifetimes):
    conversation_id = conversations.create_conversation(redis, OWNER, lifetimes)
    run = asked(redis, conversation_id, lifetimes)
    runs.add_chunk(redis, run, "Half a rep", SETTINGS)
    assert read_page(redis, conversation_id, lifetimes).run.running  # its writer still beats
    long_ago = time.time() - 2 * SETTINGS.stale_seconds
    redis.hset(keys.conversation_run(conversation_id), "heartbeat_at", long_ago)

    page = read_page(redis, conversation_id, lifetimes)

    assert page.run.status == runs.INTERRUPTED
    reply = page.messages[-1]
    assert (reply.content, reply.status) == ("Half a rep", runs.INTERRUPTED)
    assert (page.run_text, len(page.messages)) == ("", 2)


def test_the_conversation_page_is_three_round_trips(chat, monkeypatch):
    conversation_id = chat.start_conversation("Tell me about tides")
    chat.start_conversation("And another")  # the list has two rows
    chat.client.get(f"/c/{conversation_id}")  # the reply is seen: the list's news
    counted = RoundTrips(monkeypatch)

    page = chat.client.get(f"/c/{conversation_id}")

    assert page.status_code == 200 and "Tell me about tides" in page.text
    # Who may see it with the list's ids; the transcript (one transaction); the list's rows.
    assert counted.count == 3


def test_another_visitors_conversation_page_is_one_round_trip_and_not_found(
    app, chat, chat_factory, monkeypatch
):
    conversation_id = chat.start_conversation("Mine alone")
    stranger = chat_factory(app)
    counted = RoundTrips(monkeypatch)

    page = stranger.client.get(f"/c/{conversation_id}")

    assert page.status_code == 404 and "Mine alone" not in page.text
    assert counted.count == 1
