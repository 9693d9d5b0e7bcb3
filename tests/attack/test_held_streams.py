"""Event streams that would never end: an ended run's, one asked for past its end, and a run
whose writer died. Each ends at once with its end event, so no visitor can hold the
server's threads with them."""

import time
from html import unescape

from tests.test_replies import sse_frames
from webapp import conversations, runs
from webapp.storage import keys

KEEP_ALIVES_ALLOWED = 2
"""A watch that should have ended but sends keep-alives instead fails after this many (each
comes after a WATCH_BLOCK_MS wait), rather than hanging the test."""


def ended_watch(client, path):
    """Every frame of a watch, read to its end."""
    response = client.get(path, buffered=False)
    keep_alives = 0

    def counted(pieces):
        nonlocal keep_alives
        for piece in pieces:
            text = piece.decode() if isinstance(piece, bytes) else piece
            keep_alives += text.count(": keep-alive")
            assert keep_alives <= KEEP_ALIVES_ALLOWED, "the watch is held open, not ended"
            yield piece

    response.response = counted(response.response)
    return list(sse_frames(response))


def test_a_watch_of_an_ended_run_past_its_last_event_ends_at_once(chat):
    conversation_id = chat.start_conversation("Hello there")
    run = runs.latest_run(chat.client.application.extensions["redis"], conversation_id)
    path = f"/c/{conversation_id}/runs/{run.id}/events?after=99999999999999-0"
    frames = ended_watch(chat.client, path)
    assert [(event, data["status"]) for event, _, data in frames] == [("end", runs.DONE)]


def reply_whose_writer_died(chat, app, partial=""):
    """A conversation whose latest reply was started, wrote ``partial``, and then lost its
    writer (no worker writes it, its heartbeat is stale: as if its process was killed);
    the conversation's id and that run."""
    r, settings = app.extensions["redis"], app.extensions["settings"]
    conversation_id = chat.start_conversation("First")
    owner = conversations.get_conversation(r, conversation_id).owner
    message = conversations.Message(conversations.new_id(), "user", "Second", time.time())
    run = runs.start_run(
        r, conversation_id, owner, settings.lifetimes, settings.runs, user_message=message
    )
    if partial:
        runs.add_chunk(r, run, partial, settings.runs)
    stale = time.time() - settings.runs.stale_seconds - 1
    r.hset(keys.conversation_run(conversation_id), "heartbeat_at", stale)
    return conversation_id, run


def test_a_reply_whose_writer_died_shows_interrupted_as_soon_as_it_is_seen(chat, real_redis, app):
    """No reaper runs in this test (its interval is a minute): the page and the watcher end
    the run themselves, and the next message can be sent at once."""
    conversation_id, run = reply_whose_writer_died(chat, app, partial="Half a rep")
    page = unescape(chat.client.get(f"/c/{conversation_id}").text)
    assert "This reply was interrupted" in page
    assert "Half a rep" in page
    assert f"/c/{conversation_id}/runs/{run.id}/continue" in page
    frames = ended_watch(chat.client, f"/c/{conversation_id}/runs/{run.id}/events")
    assert frames[-1][0] == "end" and frames[-1][2]["status"] == runs.INTERRUPTED
    assert chat.send(conversation_id, "Third").status_code == 302


def test_a_send_ends_a_stale_run_rather_than_waiting_for_the_reaper(chat, real_redis, app):
    conversation_id, run = reply_whose_writer_died(chat, app)
    response = chat.send(conversation_id, "Are you there?")
    assert response.status_code == 302, response.text
    assert chat.wait_for_reply(conversation_id) == runs.DONE
    assert runs.latest_run(real_redis, conversation_id).id != run.id
