"""R5 for replies: starting a run and writing its chunks, retried after a dropped connection,
happen once."""

import time

from tests.chaos.flaky_proxy import FlakyProxy
from webapp import runs
from webapp.conversations import Message, create_conversation, new_id
from webapp.storage import connect, keys
from webapp.storage.scripts import START_RUN

SETTINGS = runs.RunSettings(
    max_events=100,
    events_ttl_after_end=60,
    heartbeat_seconds=2,
    stale_seconds=15,
    context_budget_tokens=1000,
)


def user_message(text: str) -> Message:
    return Message(id=new_id(), role="user", content=text, created_at=time.time())


def test_a_run_whose_start_answer_was_lost_is_started_once(
    real_redis, redis_server, lifetimes, scripts_loaded
):
    conversation_id = create_conversation(real_redis, "guest:runs", lifetimes)
    another = create_conversation(real_redis, "guest:runs", lifetimes)
    with (
        FlakyProxy(
            redis_server.port, b"EVALSHA", drop_every=2, script=START_RUN.with_indexes.sha
        ) as proxy,
        connect(proxy.url) as client,
    ):
        # The first START_RUN goes through; the second is cut after it ran.
        runs.start_run(
            client, another, "guest:runs", lifetimes, SETTINGS, user_message=user_message("hi")
        )
        run = runs.start_run(
            client,
            conversation_id,
            "guest:runs",
            lifetimes,
            SETTINGS,
            user_message=user_message("hi"),
        )
    assert len(proxy.cut) == 1  # START_RUN ran, its answer was lost, and it was sent again
    assert run is not None and run.running
    assert runs.latest_run(real_redis, conversation_id).id == run.id
    assert real_redis.zscore(keys.RUNS_RUNNING, run.index_member) is not None
    assert real_redis.llen(keys.conversation_messages(conversation_id)) == 1


def test_a_chunk_whose_answer_was_lost_is_written_once(
    real_redis, redis_server, lifetimes, scripts_loaded
):
    conversation_id = create_conversation(real_redis, "guest:runs", lifetimes)
    run = runs.start_run(
        real_redis,
        conversation_id,
        "guest:runs",
        lifetimes,
        SETTINGS,
        user_message=user_message("hi"),
    )
    words = ["Hello", " there", " world", "!"]
    with (
        FlakyProxy(redis_server.port, b"EVALSHA", drop_every=2) as proxy,
        connect(proxy.url) as client,
    ):
        for word in words:
            assert runs.add_chunk(client, run, word, SETTINGS)
    assert proxy.cut  # some chunks ran, their answers were lost, and they were sent again
    assert runs.run_text(real_redis, run)[0] == "".join(words)
