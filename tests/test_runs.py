"""Runs in storage: started with the user's message, written chunk by chunk, ended once."""

import itertools
import time

import pytest

from tests.conftest import RUN_SETTINGS as SETTINGS
from webapp import conversations, runs
from webapp.conversations import ConversationGone, Message
from webapp.llm import (
    END_TURN,
    MAX_TOKENS,
    REFUSAL,
    Finished,
    ModelBusy,
    ModelStreamBroken,
    Thinking,
    Usage,
)
from webapp.runs import RunInProgress
from webapp.storage import keys

OWNER = "guest:runner"
USAGE = Usage(input_tokens=40, cache_write_tokens=0, cache_read_tokens=1000, output_tokens=25)


def user_message(text="Tell me about tides"):
    return Message(id=conversations.new_id(), role="user", content=text, created_at=time.time())


@pytest.fixture
def conversation_id(redis, lifetimes):
    return conversations.create_conversation(redis, OWNER, lifetimes)


def start(redis, conversation_id, lifetimes, **how):
    return runs.start_run(redis, conversation_id, OWNER, lifetimes, SETTINGS, **how)


class ScriptedProvider:
    """Yields the given chunks (and a sign of thinking first, with ``thinks``), then raises
    ``error`` if given, or ends with ``stop_reason``."""

    name = "scripted"

    def __init__(self, chunks, error=None, stop_reason=END_TURN, thinks=False):
        self.chunks, self.error, self.stop_reason, self.thinks = chunks, error, stop_reason, thinks
        self.seen = []

    def stream_reply(self, turns, note="", partial=""):
        self.seen.append(([(t.role, t.content) for t in turns], partial))
        if self.thinks:
            yield Thinking()
        yield from self.chunks
        if self.error:
            raise self.error
        yield Finished(self.stop_reason, USAGE, "scripted-model")

    def count_tokens(self, turns, note=""):
        return 10


def test_start_stores_the_message_and_a_running_run(redis, conversation_id, lifetimes):
    message = user_message()
    run = start(redis, conversation_id, lifetimes, user_message=message)
    assert conversations.read_messages(redis, conversation_id) == [message]
    latest = runs.latest_run(redis, conversation_id)
    assert (latest.id, latest.status, latest.message_id) == (run.id, "running", run.id)
    assert redis.zscore(keys.RUNS_RUNNING, run.index_member) is not None


def test_a_repeated_message_starts_nothing(redis, conversation_id, lifetimes):
    message = user_message()
    first = start(redis, conversation_id, lifetimes, user_message=message)
    runs.finish_run(redis, first, runs.DONE, lifetimes, SETTINGS)
    assert start(redis, conversation_id, lifetimes, user_message=message) is None
    assert runs.latest_run(redis, conversation_id).id == first.id
    assert redis.zcard(keys.RUNS_RUNNING) == 0


def test_a_second_run_is_refused_while_one_is_running(redis, conversation_id, lifetimes):
    start(redis, conversation_id, lifetimes, user_message=user_message())
    second = user_message("another")
    with pytest.raises(RunInProgress):
        start(redis, conversation_id, lifetimes, user_message=second)
    assert second not in conversations.read_messages(redis, conversation_id)
    assert redis.zcard(keys.RUNS_RUNNING) == 1


def test_starting_in_a_gone_conversation_raises_gone(redis, lifetimes):
    with pytest.raises(ConversationGone):
        start(redis, "gone-conversation", lifetimes, user_message=user_message())
    assert redis.zcard(keys.RUNS_RUNNING) == 0


def test_write_reply_streams_chunks_and_stores_the_reply_once(redis, conversation_id, lifetimes):
    run = start(
        redis, conversation_id, lifetimes, user_message=user_message("Why is the sea salty?")
    )
    provider = ScriptedProvider(["Rivers ", "carry ", "minerals."])
    assert runs.write_reply(redis, provider, run, lifetimes, SETTINGS) == runs.DONE
    assert provider.seen == [([("user", "Why is the sea salty?")], "")]
    reply = conversations.read_messages(redis, conversation_id)[-1]
    assert (reply.id, reply.role, reply.content, reply.status) == (
        run.id, "assistant", "Rivers carry minerals.", None,
    )  # fmt: skip
    assert runs.run_text(redis, run)[0] == "Rivers carry minerals."
    assert runs.finish_run(redis, run, runs.DONE, lifetimes, SETTINGS) is False
    assert len(conversations.read_messages(redis, conversation_id)) == 2
    assert redis.zcard(keys.RUNS_RUNNING) == 0
    assert 0 < redis.ttl(keys.run_events(conversation_id, run.id)) <= SETTINGS.events_ttl_after_end


def test_events_replay_from_any_point_and_end_with_the_status(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    for chunk in ["one ", "two ", "three"]:
        assert runs.add_chunk(redis, run, chunk, SETTINGS)
    runs.finish_run(redis, run, runs.DONE, lifetimes, SETTINGS)
    events = runs.read_events(redis, conversation_id, run.id, "0-0", block_ms=10)
    assert [e.text for e in events[:-1]] == ["one ", "two ", "three"]
    assert events[-1].status == "done"
    rest = list(runs.follow(redis, conversation_id, run.id, events[0].id, 10, lifetimes, SETTINGS))
    assert "".join(e.text for e in rest) == "two three"
    assert rest[-1].status == "done"


def test_a_page_that_read_the_run_just_before_it_ended_is_still_told_the_end(
    redis, conversation_id, lifetimes
):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    assert runs.add_chunk(redis, run, "All of it", SETTINGS)
    runs.finish_run(redis, run, runs.DONE, lifetimes, SETTINGS)  # between the page's reads
    text, after = runs.run_text(redis, run)
    assert text == "All of it"
    watched = itertools.islice(
        runs.follow(redis, conversation_id, run.id, after, 10, lifetimes, SETTINGS), 3
    )
    assert [event and event.status for event in watched] == ["done"]  # not waits (None)


def test_stop_keeps_the_partial_and_the_writer_stops(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    assert runs.add_chunk(redis, run, "Half of ", SETTINGS)
    assert runs.request_stop(redis, run, lifetimes, SETTINGS) is True
    assert runs.add_chunk(redis, run, "the rest", SETTINGS) is False
    reply = conversations.read_messages(redis, conversation_id)[-1]
    assert (reply.content, reply.status) == ("Half of ", "stopped")
    assert runs.latest_run(redis, conversation_id).status == "stopped"


def test_writer_that_finds_its_run_stopped_leaves_it_stopped(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())

    class StopsMidway(ScriptedProvider):
        def stream_reply(self, turns, note="", partial=""):
            yield "Before "
            runs.request_stop(redis, run, lifetimes, SETTINGS)
            yield "after"

    assert runs.write_reply(redis, StopsMidway([]), run, lifetimes, SETTINGS) == "stopped"
    assert conversations.read_messages(redis, conversation_id)[-1].content == "Before "


def test_busy_model_fails_the_run_and_stores_no_reply(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    provider = ScriptedProvider([], error=ModelBusy("overloaded", request_id="req_1"))
    assert runs.write_reply(redis, provider, run, lifetimes, SETTINGS) == "failed"
    assert [m.role for m in conversations.read_messages(redis, conversation_id)] == ["user"]
    failed = runs.latest_run(redis, conversation_id)
    assert (failed.status, failed.error_kind) == ("failed", "busy")
    assert redis.hget(keys.conversation_run(conversation_id), "request_id") == "req_1"


def test_continue_replaces_the_partial_with_the_whole_reply(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    broken = ScriptedProvider(["The first ", "half"], error=ModelStreamBroken("cut"))
    assert runs.write_reply(redis, broken, run, lifetimes, SETTINGS) == "failed"
    partial = conversations.read_messages(redis, conversation_id)[-1]
    assert (partial.content, partial.status) == ("The first half", "failed")

    again = start(
        redis,
        conversation_id,
        lifetimes,
        replacing=runs.latest_run(redis, conversation_id),
        prefix=partial.content,
    )
    rest = ScriptedProvider([" and the second half."])
    assert (
        runs.write_reply(redis, rest, again, lifetimes, SETTINGS, prefix=partial.content) == "done"
    )
    assert rest.seen[0] == ([("user", "Tell me about tides")], "The first half")  # the partial
    stored = conversations.read_messages(redis, conversation_id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert (stored[-1].id, stored[-1].content, stored[-1].status) == (
        run.id, "The first half and the second half.", None,
    )  # fmt: skip


def test_retry_after_a_busy_failure_appends_the_reply(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    runs.write_reply(redis, ScriptedProvider([], error=ModelBusy("busy")), run, lifetimes, SETTINGS)
    again = start(
        redis, conversation_id, lifetimes, replacing=runs.latest_run(redis, conversation_id)
    )
    runs.write_reply(redis, ScriptedProvider(["Now it works."]), again, lifetimes, SETTINGS)
    assert [m.content for m in conversations.read_messages(redis, conversation_id)][1:] == [
        "Now it works."
    ]


def test_reaper_interrupts_only_stale_runs(redis, lifetimes):
    stale_id = conversations.create_conversation(redis, OWNER, lifetimes)
    fresh_id = conversations.create_conversation(redis, OWNER, lifetimes)
    stale = start(redis, stale_id, lifetimes, user_message=user_message())
    fresh = start(redis, fresh_id, lifetimes, user_message=user_message())
    runs.add_chunk(redis, stale, "Written before the crash", SETTINGS)
    old = time.time() - 60
    redis.hset(keys.conversation_run(stale_id), "heartbeat_at", old)
    redis.zadd(keys.RUNS_RUNNING, {stale.index_member: old})

    assert runs.reap_stale_runs(redis, lifetimes, SETTINGS) == 1
    assert runs.latest_run(redis, stale_id).status == "interrupted"
    assert runs.latest_run(redis, fresh_id).status == "running"
    partial = conversations.read_messages(redis, stale_id)[-1]
    assert (partial.content, partial.status) == ("Written before the crash", "interrupted")
    assert redis.zrange(keys.RUNS_RUNNING, 0, -1) == [fresh.index_member]


def test_reaper_spares_a_run_whose_heartbeat_came_back(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    redis.zadd(keys.RUNS_RUNNING, {run.index_member: time.time() - 60})  # index lags behind
    assert runs.reap_stale_runs(redis, lifetimes, SETTINGS) == 0
    assert runs.latest_run(redis, conversation_id).status == "running"


def test_heartbeat_reports_runs_that_ended_elsewhere(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    assert runs.beat(redis, [run], SETTINGS) == []
    runs.request_stop(redis, run, lifetimes, SETTINGS)
    assert runs.beat(redis, [run], SETTINGS) == [run]


def test_run_keys_share_the_transcript_lifetime(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    runs.add_chunk(redis, run, "text", SETTINGS)
    retention = lifetimes.transcript_retention
    for key in (keys.conversation_run(conversation_id), keys.run_events(conversation_id, run.id)):
        assert retention - 10 < redis.ttl(key) <= retention
    runs.finish_run(redis, run, runs.DONE, lifetimes, SETTINGS)
    for key in (
        *keys.conversation_keys(conversation_id)[:2],
        keys.conversation_run(conversation_id),
    ):
        assert retention - 10 < redis.ttl(key) <= retention


def test_a_watcher_waits_for_a_run_that_has_not_written_yet(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    watching = runs.follow(redis, conversation_id, run.id, "0-0", 10, lifetimes, SETTINGS)
    assert next(watching) is None  # nothing yet, but the run is running: keep waiting
    runs.add_chunk(redis, run, "First words", SETTINGS)
    assert next(watching).text == "First words"


def test_a_watcher_of_a_run_with_no_events_left_ends(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    runs.finish_run(redis, run, runs.FAILED, lifetimes, SETTINGS)
    redis.delete(keys.run_events(conversation_id, run.id))
    (end,) = runs.follow(redis, conversation_id, run.id, "0-0", 10, lifetimes, SETTINGS)
    assert end.status == runs.FAILED


def test_a_watch_past_the_end_of_an_ended_run_ends_at_once(redis, conversation_id, lifetimes):
    """A watcher that asks for events after the last one (a forged or stale Last-Event-ID)
    is told the end at once, not kept waiting for events that will never come."""
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    runs.add_chunk(redis, run, "All of it", SETTINGS)
    runs.finish_run(redis, run, runs.DONE, lifetimes, SETTINGS)
    long_wait = 60_000  # a wait would hang the test: the watch must not block at all
    watched = runs.follow(
        redis, conversation_id, run.id, "99999999999999-0", long_wait, lifetimes, SETTINGS
    )
    assert [event.status for event in watched] == [runs.DONE]
    other = runs.follow(
        redis, conversation_id, "no-such-run", "0-0", long_wait, lifetimes, SETTINGS
    )
    assert [event.status for event in other] == [runs.GONE]


def test_a_stale_run_ends_as_interrupted_when_seen(redis, conversation_id, lifetimes):
    """Its writer died (no heartbeat): whoever reads it ends it, keeping its partial text,
    without waiting for the reaper."""
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    runs.add_chunk(redis, run, "Half a rep", SETTINGS)
    assert runs.seen_run(redis, conversation_id, lifetimes, SETTINGS).running  # still beating
    long_ago = time.time() - 2 * SETTINGS.stale_seconds
    redis.hset(keys.conversation_run(conversation_id), "heartbeat_at", long_ago)
    seen = runs.seen_run(redis, conversation_id, lifetimes, SETTINGS)
    assert seen.status == runs.INTERRUPTED
    reply = conversations.read_messages(redis, conversation_id)[-1]
    assert (reply.content, reply.status) == ("Half a rep", runs.INTERRUPTED)
    # A watcher of it is told the end, and a new message can be sent at once.
    events = list(runs.follow(redis, conversation_id, run.id, "0-0", 10, lifetimes, SETTINGS))
    assert events[-1].status == runs.INTERRUPTED


# How a reply ends: what the model said of its end decides what the page offers.


def test_a_reply_cut_off_at_its_length_limit_keeps_its_text_marked_cut_off(
    redis, conversation_id, lifetimes
):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    provider = ScriptedProvider(["Tides rise ", "twice a"], stop_reason=MAX_TOKENS)
    assert runs.write_reply(redis, provider, run, lifetimes, SETTINGS) == runs.CUT_OFF
    reply = conversations.read_messages(redis, conversation_id)[-1]
    assert (reply.content, reply.status) == ("Tides rise twice a", runs.CUT_OFF)
    assert runs.CUT_OFF in runs.ENDED_EARLY


@pytest.mark.parametrize("chunks", [[], ["I can't"]])
def test_a_declined_reply_is_never_a_finished_empty_one(redis, conversation_id, lifetimes, chunks):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    provider = ScriptedProvider(chunks, stop_reason=REFUSAL)
    assert runs.write_reply(redis, provider, run, lifetimes, SETTINGS) == runs.DECLINED
    stored = conversations.read_messages(redis, conversation_id)
    assert all(m.status == runs.DECLINED for m in stored if m.role == "assistant")
    assert [m.content for m in stored if m.role == "assistant"] == ["".join(chunks)] * bool(chunks)
    assert runs.latest_run(redis, conversation_id).status == runs.DECLINED


@pytest.mark.parametrize("stop_reason", [END_TURN, "stop_sequence", "pause_turn"])
def test_no_text_at_all_fails_the_run_whatever_the_reason(
    redis, conversation_id, lifetimes, stop_reason
):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    provider = ScriptedProvider(["", " "][:1], stop_reason=stop_reason)
    assert runs.write_reply(redis, provider, run, lifetimes, SETTINGS) == runs.FAILED
    assert [m.role for m in conversations.read_messages(redis, conversation_id)] == ["user"]


def test_thinking_is_told_to_watchers_and_never_stored(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    provider = ScriptedProvider(["Because ", "of the moon."], thinks=True)
    assert runs.write_reply(redis, provider, run, lifetimes, SETTINGS) == runs.DONE
    events = runs.read_events(redis, conversation_id, run.id, "0-0", block_ms=10)
    assert [e.phase for e in events][:1] == [runs.THINKING]
    assert "".join(e.text for e in events) == "Because of the moon."
    assert conversations.read_messages(redis, conversation_id)[-1].content == "Because of the moon."


def test_the_tokens_billed_are_kept_with_the_run_and_the_conversation(
    redis, conversation_id, lifetimes
):
    for _ in range(2):
        run = start(redis, conversation_id, lifetimes, user_message=user_message())
        runs.write_reply(redis, ScriptedProvider(["Yes."]), run, lifetimes, SETTINGS)
    assert runs.latest_run(redis, conversation_id).usage == USAGE
    meta = redis.hgetall(keys.conversation_meta(conversation_id))
    assert int(meta["cache_read_tokens"]) == 2 * USAGE.cache_read_tokens
    assert int(meta["output_tokens"]) == 2 * USAGE.output_tokens


@pytest.mark.parametrize(
    ("continuation", "joined"),
    [
        (" and the second half.", "The first half and the second half."),
        # The model repeats the last words before carrying on: they appear once.
        ("The first half and the second half.", "The first half and the second half."),
        (" first half and the second half.", "The first half and the second half."),
        # A short chance match is not taken for a repetition.
        ("half-moon tides come next.", "The first halfhalf-moon tides come next."),
    ],
)
def test_continue_joins_the_partial_and_the_rest_with_no_word_lost_or_repeated(
    redis, conversation_id, lifetimes, continuation, joined
):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    broken = ScriptedProvider(["The first ", "half"], error=ModelStreamBroken("cut"))
    runs.write_reply(redis, broken, run, lifetimes, SETTINGS)
    partial = conversations.read_messages(redis, conversation_id)[-1].content
    again = start(
        redis,
        conversation_id,
        lifetimes,
        replacing=runs.latest_run(redis, conversation_id),
        prefix=partial,
    )
    words = [continuation[i : i + 5] for i in range(0, len(continuation), 5)]
    runs.write_reply(redis, ScriptedProvider(words), again, lifetimes, SETTINGS, prefix=partial)
    assert conversations.read_messages(redis, conversation_id)[-1].content == joined


@pytest.mark.parametrize("continuation", [" half and the rest.", "half and the rest."])
def test_continue_after_a_space_neither_doubles_it_nor_loses_it(
    redis, conversation_id, lifetimes, continuation
):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    runs.write_reply(
        redis,
        ScriptedProvider(["The first "], error=ModelStreamBroken("cut")),
        run,
        lifetimes,
        SETTINGS,
    )
    partial = conversations.read_messages(redis, conversation_id)[-1].content
    assert partial == "The first "  # kept as written, its space too
    again = start(
        redis,
        conversation_id,
        lifetimes,
        replacing=runs.latest_run(redis, conversation_id),
        prefix=partial,
    )
    runs.write_reply(
        redis, ScriptedProvider([continuation]), again, lifetimes, SETTINGS, prefix=partial
    )
    assert (
        conversations.read_messages(redis, conversation_id)[-1].content
        == "The first half and the rest."
    )


def test_a_reply_of_white_space_alone_is_no_message(redis, conversation_id, lifetimes):
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    assert (
        runs.write_reply(redis, ScriptedProvider(["  ", "\n"]), run, lifetimes, SETTINGS)
        == runs.FAILED
    )
    assert [m.role for m in conversations.read_messages(redis, conversation_id)] == ["user"]


def test_a_length_limit_reached_before_any_text_is_a_failure_not_a_cut(
    redis, conversation_id, lifetimes
):
    """Thinking used the whole budget: there is nothing to carry on, so the page offers Retry
    and says the reply could not be written."""
    run = start(redis, conversation_id, lifetimes, user_message=user_message())
    provider = ScriptedProvider([], stop_reason=MAX_TOKENS, thinks=True)
    assert runs.write_reply(redis, provider, run, lifetimes, SETTINGS) == runs.FAILED
