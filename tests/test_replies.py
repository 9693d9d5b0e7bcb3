"""Replies over HTTP with Claude as the model: the real SDK against the strict fake Messages
API (no prefill, thinking first, stop reasons, prompt caching, model look-ups, spend
limits), and Catch me up written in the background."""

import json
import logging
import time
from html import unescape

import pytest

from tests.fake_anthropic import (
    Hang,
    MaxTokens,
    Refusal,
    SpendLimit,
    Status,
    StreamError,
    carrying_on,
)
from tests.test_admin import end_session
from tests.test_metrics import admin_client_of, scrape, value
from webapp import conversations, runs
from webapp.storage import keys


@pytest.fixture
def client(claude_app):
    return claude_app.test_client()


def sse_frames(response):
    """Parse a Server-Sent Events body (iterated as it arrives) into (event, id, data) frames."""
    buffer = ""
    for piece in response.response:
        buffer += piece.decode() if isinstance(piece, bytes) else piece
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            fields = {}
            for line in frame.splitlines():
                if line and not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    fields[name] = value
            if "data" in fields:
                yield fields.get("event", "message"), fields.get("id"), json.loads(fields["data"])


def watch(client, conversation_id, run_id, last_event_id=None):
    """The text a watcher sees, and the end event's data."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = client.get(
        f"/c/{conversation_id}/runs/{run_id}/events", headers=headers, buffered=False
    )
    assert response.mimetype == "text/event-stream"
    text = []
    for event, _, data in sse_frames(response):
        if event == "end":
            return "".join(text), data
        if event == "message":  # not a phase ("thinking")
            text.append(data["text"])
    raise AssertionError("the stream ended without an end event")


def test_a_reply_streams_from_claude_and_is_stored(chat, real_redis, fake_anthropic, claude_app):
    conversation_id = chat.start_conversation("What is a tide?")
    chat.send(conversation_id, "And a spring tide?")
    assert chat.wait_for_reply(conversation_id) == "done"
    stored = conversations.read_messages(real_redis, conversation_id)
    assert [m.content for m in stored] == [
        "What is a tide?",
        "Echo: What is a tide?",
        "And a spring tide?",
        "Echo: And a spring tide?",
    ]
    request = fake_anthropic.message_requests[-1]
    assert request.body["model"] == claude_app.config["ANTHROPIC_MODEL"]
    assert request.body["system"] == claude_app.config["SYSTEM_PROMPT"]
    assert request.body["max_tokens"] == claude_app.config["MAX_TOKENS"]
    assert request.body["stream"] is True
    assert request.body["messages"] == [{"role": m.role, "content": m.content} for m in stored[:3]]
    assert "Claude · " in chat.client.get("/").text


def test_watchers_replay_the_whole_reply_or_the_rest_after_last_event_id(
    chat, real_redis, fake_anthropic
):
    fake_anthropic.reply_text = "one two three four five six"
    conversation_id = chat.start_conversation("Count for me")
    run = runs.latest_run(real_redis, conversation_id)
    whole, end = watch(chat.client, conversation_id, run.id)
    assert (whole, end["status"]) == ("one two three four five six", "done")
    assert watch(chat.client, conversation_id, run.id)[0] == whole  # a second watcher
    events = runs.read_events(real_redis, conversation_id, run.id, "0-0", block_ms=10)
    assert events[0].phase == runs.THINKING  # Claude thought first: said, never shown as text
    text_events = [event for event in events if event.text]
    rest, _ = watch(chat.client, conversation_id, run.id, last_event_id=text_events[2].id)
    assert rest == whole[len("".join(e.text for e in text_events[:3])) :]
    assert rest == "four five six"


def test_a_watcher_follows_live_and_resumes_mid_reply(chat, real_redis, fake_anthropic):
    fake_anthropic.reply_text = "alpha beta gamma delta epsilon"
    fake_anthropic.enqueue(Hang(after=2))
    chat.start("Greek letters please")
    conversation_id = conversations.list_conversations(real_redis, chat_owner(chat))[0].id
    run = runs.latest_run(real_redis, conversation_id)
    response = chat.client.get(f"/c/{conversation_id}/runs/{run.id}/events", buffered=False)
    frames = (frame for frame in sse_frames(response) if frame[0] == "message")  # no phases
    seen = [next(frames), next(frames)]  # the reply is now held after two tokens
    assert "".join(data["text"] for _, _, data in seen) == "alpha beta "
    # A reload in the middle reconnects with the last event id it saw.
    resumed = chat.client.get(
        f"/c/{conversation_id}/runs/{run.id}/events",
        headers={"Last-Event-ID": seen[0][1]},
        buffered=False,
    )
    fake_anthropic.release()
    rest = []
    for event, _, data in sse_frames(resumed):
        if event == "end":
            break
        if event == "message":
            rest.append(data["text"])
    assert "".join(rest) == "beta gamma delta epsilon"
    assert chat.wait_for_reply(conversation_id) == "done"


def chat_owner(chat):
    with chat.client.session_transaction() as session:
        return f"guest:{session['guest_id']}"


def test_overloaded_claude_shows_busy_and_keeps_the_message(chat, real_redis, fake_anthropic):
    fake_anthropic.enqueue(Status(529))
    conversation_id = chat.start_conversation("Are you there?")
    assert [m.role for m in conversations.read_messages(real_redis, conversation_id)] == ["user"]
    page = unescape(chat.client.get(f"/c/{conversation_id}").text)
    assert "Claude is busy right now." in page
    assert "Are you there?" in page
    assert "/continue" not in page
    chat.post_button(conversation_id, "retry")
    assert chat.wait_for_reply(conversation_id) == "done"
    assert conversations.read_messages(real_redis, conversation_id)[-1].content == (
        "Echo: Are you there?"
    )


def test_an_error_mid_stream_keeps_the_partial_and_continue_completes_it(
    chat, real_redis, fake_anthropic
):
    whole = "The moon pulls the sea toward it."
    fake_anthropic.reply_text = carrying_on(whole)
    fake_anthropic.enqueue(StreamError(after=3))
    conversation_id = chat.start_conversation("Why tides?")
    partial = conversations.read_messages(real_redis, conversation_id)[-1]
    assert (partial.content, partial.status) == ("The moon pulls ", "failed")
    page = chat.client.get(f"/c/{conversation_id}").text
    assert "The reply broke off part-way." in page
    assert "incomplete" in page

    chat.post_button(conversation_id, "continue")
    assert chat.wait_for_reply(conversation_id) == "done"
    # No prefill (the strict fake refuses it, as the API does): the partial, then a user turn.
    *_, partial_turn, carry_on = fake_anthropic.message_requests[-1].body["messages"]
    assert partial_turn == {"role": "assistant", "content": "The moon pulls"}
    assert carry_on["role"] == "user" and "“The moon pulls”" in carry_on["content"]
    stored = conversations.read_messages(real_redis, conversation_id)
    assert len(stored) == 2
    assert (stored[-1].id, stored[-1].content, stored[-1].status) == (partial.id, whole, None)


def test_a_rejected_key_gives_an_operator_message_and_logs_the_request_id(
    chat, fake_anthropic, caplog
):
    fake_anthropic.enqueue(Status(401))
    with caplog.at_level(logging.ERROR, logger="webapp.llm.claude"):
        conversation_id = chat.start_conversation("Hello?")
    page = unescape(chat.client.get(f"/c/{conversation_id}").text)
    assert "The assistant can't answer because of a server setting." in page
    assert "Traceback" not in page
    assert "authentication_error" not in page
    assert any("req_fake_" in record.getMessage() for record in caplog.records)


def test_stop_from_another_tab_keeps_what_was_written(claude_app, chat, real_redis, fake_anthropic):
    fake_anthropic.reply_text = "a b c d e f g h"
    fake_anthropic.enqueue(Hang(after=3))
    chat.start("Letters")
    conversation_id = conversations.list_conversations(real_redis, chat_owner(chat))[0].id
    run = runs.latest_run(real_redis, conversation_id)
    wait_for_text(real_redis, run, "a b c ")

    other_tab = claude_app.test_client()
    other_tab.set_cookie("session", chat.client.get_cookie("session").value)
    page = other_tab.get(f"/c/{conversation_id}").text
    assert "writing…" in page
    response = other_tab.post(
        f"/c/{conversation_id}/runs/{run.id}/stop",
        data={"csrf_token": page.split('name="csrf_token" value="')[1].split('"')[0]},
    )
    assert response.status_code == 302
    fake_anthropic.release()
    assert chat.wait_for_reply(conversation_id) == "stopped"
    reply = conversations.read_messages(real_redis, conversation_id)[-1]
    assert (reply.content, reply.status) == ("a b c ", "stopped")
    assert "You stopped this reply." in chat.client.get(f"/c/{conversation_id}").text


def wait_for_text(r, run, text, timeout=5):
    deadline = time.monotonic() + timeout
    while runs.run_text(r, run)[0] != text:
        assert time.monotonic() < deadline, runs.run_text(r, run)
        time.sleep(0.02)


def test_sending_while_a_reply_is_written_is_refused_with_the_text_kept(
    chat, real_redis, fake_anthropic
):
    fake_anthropic.enqueue(Hang(after=1))
    chat.start("First")
    conversation_id = conversations.list_conversations(real_redis, chat_owner(chat))[0].id
    response = chat.send(conversation_id, "Second, too soon")
    assert response.status_code == 409
    assert "A reply is still being written." in response.text
    assert "Second, too soon" in response.text
    fake_anthropic.release()
    chat.wait_for_reply(conversation_id)
    assert [m.content for m in conversations.read_messages(real_redis, conversation_id)][
        0
    ] == "First"
    assert "Second, too soon" not in [
        m.content for m in conversations.read_messages(real_redis, conversation_id)
    ]


def test_a_page_with_a_running_reply_refreshes_itself_without_javascript(
    chat, real_redis, fake_anthropic
):
    fake_anthropic.enqueue(Hang(after=1))
    chat.start("Slowly")
    conversation_id = conversations.list_conversations(real_redis, chat_owner(chat))[0].id
    page = chat.client.get(f"/c/{conversation_id}").text
    assert '<noscript><meta http-equiv="refresh" content="2; url=' in page
    assert "writing…" in page
    fake_anthropic.release()
    chat.wait_for_reply(conversation_id)
    assert "http-equiv" not in chat.client.get(f"/c/{conversation_id}").text


def test_events_of_unknown_runs_end_at_once_and_bad_ids_are_refused(chat, client):
    conversation_id = chat.start_conversation("Hi")
    text, end = watch(client, conversation_id, "no-such-run")
    assert (text, end["status"]) == ("", "gone")
    bad = client.get(f"/c/{conversation_id}/runs/x/events", headers={"Last-Event-ID": "1;DROP"})
    assert bad.status_code == 400
    assert client.get("/c/not-mine/runs/x/events").status_code == 404


# Claude as it behaves today.


def page_of(chat, conversation_id):
    return unescape(chat.client.get(f"/c/{conversation_id}").text)


def test_a_reply_cut_off_at_its_length_limit_shows_so_and_continue_finishes_it(
    chat, real_redis, fake_anthropic
):
    whole = "Tides rise and fall twice a day because the moon pulls the sea."
    fake_anthropic.reply_text = carrying_on(whole)
    fake_anthropic.enqueue(MaxTokens(after=4))
    conversation_id = chat.start_conversation("Why tides?")
    assert chat.wait_for_reply(conversation_id) == runs.CUT_OFF
    partial = conversations.read_messages(real_redis, conversation_id)[-1]
    assert (partial.content, partial.status) == ("Tides rise and fall ", runs.CUT_OFF)
    page = page_of(chat, conversation_id)
    assert "This reply reached its length limit." in page
    assert "cut off" in page
    chat.post_button(conversation_id, "continue")
    assert chat.wait_for_reply(conversation_id) == runs.DONE
    assert fake_anthropic.message_requests[-1].body["messages"][-1]["role"] == "user"
    stored = conversations.read_messages(real_redis, conversation_id)
    assert [(m.id, m.content, m.status) for m in stored[1:]] == [(partial.id, whole, None)]


def test_continue_drops_the_words_claude_repeats(chat, real_redis, fake_anthropic):
    whole = "First boil the water, then pour it over the leaves and wait four minutes."
    fake_anthropic.reply_text = carrying_on(whole, repeat_tail=20)
    fake_anthropic.enqueue(MaxTokens(after=6))
    conversation_id = chat.start_conversation("How do I make tea?")
    chat.wait_for_reply(conversation_id)
    chat.post_button(conversation_id, "continue")
    chat.wait_for_reply(conversation_id)
    assert conversations.read_messages(real_redis, conversation_id)[-1].content == whole


@pytest.mark.parametrize("after", [0, 2])
def test_a_refusal_shows_declined_with_retry_and_stores_no_empty_reply(
    chat, real_redis, fake_anthropic, after
):
    fake_anthropic.enqueue(Refusal(after=after))
    conversation_id = chat.start_conversation("Something Claude won't do")
    assert chat.wait_for_reply(conversation_id) == runs.DECLINED
    replies = [
        m for m in conversations.read_messages(real_redis, conversation_id) if m.role != "user"
    ]
    assert all(m.content.strip() and m.status == runs.DECLINED for m in replies)
    assert len(replies) == (1 if after else 0)
    page = page_of(chat, conversation_id)
    assert "Claude declined to answer this." in page
    assert "/retry" in page and "/continue" not in page
    chat.post_button(conversation_id, "retry")
    assert chat.wait_for_reply(conversation_id) == runs.DONE


def test_thinking_never_reaches_the_page_or_redis(chat, real_redis, fake_anthropic):
    fake_anthropic.thinking = "PRIVATE-REASONING about the question"
    conversation_id = chat.start_conversation("Think hard, then answer")
    chat.wait_for_reply(conversation_id)
    assert "PRIVATE-REASONING" not in chat.client.get(f"/c/{conversation_id}").text
    for key in real_redis.scan_iter(match="rc:*"):
        assert b"PRIVATE-REASONING" not in (real_redis.dump(key) or b""), key
    run = runs.latest_run(real_redis, conversation_id)
    events = runs.read_events(real_redis, conversation_id, run.id, "0-0", block_ms=10)
    assert events[0].phase == runs.THINKING


def test_the_second_turn_reads_the_cache_and_metrics_sum_it(
    claude_app, chat, real_redis, fake_anthropic
):
    fake_anthropic.min_cacheable_tokens = 0
    fake_anthropic.reply_text = "A long answer about sourdough starters. " * 20
    conversation_id = chat.start_conversation("How do I keep a sourdough starter alive?")
    chat.send(conversation_id, "And if I go away for a week?")
    chat.wait_for_reply(conversation_id)
    first, second = (r.body for r in fake_anthropic.message_requests)
    assert second["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    usage = runs.latest_run(real_redis, conversation_id).usage
    assert usage.cache_read_tokens > 0
    text = scrape(admin_client_of(claude_app, real_redis))
    model = claude_app.config["ANTHROPIC_MODEL"]
    assert value(text, "model_tokens_total", model=model, kind="cache_read") == (
        usage.cache_read_tokens
    )
    assert value(text, "model_tokens_total", model=model, kind="output") > 0
    meta = real_redis.hgetall(keys.conversation_meta(conversation_id))
    assert int(meta["cache_read_tokens"]) == usage.cache_read_tokens
    assert first["messages"][0] == second["messages"][0]  # the same prefix, so it is read


def test_a_retired_model_fails_at_start_up_with_one_clear_line(
    make_claude_app, chat_factory, fake_anthropic, caplog
):
    fake_anthropic.retired.add("claude-sonnet-4-5")
    with caplog.at_level(logging.ERROR, logger="webapp.llm.claude"):
        app = make_claude_app(ANTHROPIC_MODEL="claude-sonnet-4-5")
    (line,) = [r.getMessage() for r in caplog.records if "FLASK_ANTHROPIC_MODEL" in r.getMessage()]
    assert "'claude-sonnet-4-5', which is retired" in line
    ready = app.test_client().get("/readyz").json
    assert ready["status"] == "degraded"
    assert "FLASK_ANTHROPIC_MODEL" in ready["models"]
    chat = chat_factory(app)
    conversation_id = chat.start_conversation("Hello?")
    assert "The configured model isn't available." in page_of(chat, conversation_id)


def test_a_spend_limit_says_so_instead_of_busy(chat, fake_anthropic):
    fake_anthropic.enqueue(*[SpendLimit()] * 3)
    conversation_id = chat.start_conversation("Hello?")
    page = page_of(chat, conversation_id)
    assert "reached its spending limit" in page
    assert "busy" not in page


def test_catch_me_up_is_written_in_the_background_and_survives_a_reload(
    make_claude_app, chat_factory, real_redis, fake_anthropic
):
    chat = chat_factory(make_claude_app())
    conversation_id = chat.start_conversation("Plan a trip to Porto")
    # The session ends (as by idling); the one the catch-up starts lasts the test out.
    end_session(real_redis, conversation_id)
    fake_anthropic.reply_text = "Goal: a trip to Porto. Next: book a hotel."
    fake_anthropic.enqueue(Hang())  # the summary takes its time
    page = chat.client.get(f"/c/{conversation_id}").text
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    # The summary request hangs until released: an answer now shows the POST did not wait.
    response = chat.client.post(f"/c/{conversation_id}/catch-up", data={"csrf_token": token})
    assert response.status_code == 302
    for _ in range(2):  # a reload while it is written still shows it being written
        page = page_of(chat, conversation_id)
        assert "Catching up…" in page
        assert 'http-equiv="refresh"' in page  # without script, the page refreshes
        assert 'name="text"' not in page  # the message box waits for the summary
    fake_anthropic.release()
    assert chat.wait_for_reply(conversation_id) == runs.DONE
    page = page_of(chat, conversation_id)
    assert "Caught up from a summary" in page
    note = conversations.read_messages(real_redis, conversation_id)[-1]
    assert (note.role, note.status) == ("note", "model")
    assert f"a {note.tokens:,}-token summary instead of {note.replaced_tokens:,} tokens" in page
    assert note.replaced_tokens > note.tokens > 0
    assert 'name="text"' in page


def test_an_expired_session_offers_to_catch_up_not_to_retry(chat, real_redis, fake_anthropic):
    """Retry and Continue can't write in a session that has ended: the banner's choice comes
    first, and the page offers no button that would do nothing."""
    fake_anthropic.enqueue(Status(529))
    conversation_id = chat.start_conversation("Hello?")
    assert "/retry" in chat.client.get(f"/c/{conversation_id}").text
    real_redis.delete(keys.conversation_session(conversation_id))
    page = page_of(chat, conversation_id)
    assert "Where were we?" in page
    assert "/retry" not in page and "/continue" not in page
