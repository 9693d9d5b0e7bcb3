"""Deleting a conversation: every key of it, its runs' events, its resume codes and what
points at it, with no walk of the keyspace."""

import time

import pytest

from tests.test_runs import SETTINGS
from webapp import conversations, deletion, resume_codes, runs
from webapp.admin import audit
from webapp.conversations import Message
from webapp.storage import keys

OWNER = "guest:deleter"
SECRET = "test-secret"


def user_message(text="Hello"):
    return Message(conversations.new_id(), "user", text, time.time())


def busy_conversation(r, lifetimes, owner=OWNER):
    """A conversation with two ended runs (whose events linger), a running one, a draft and
    two resume codes issued for it; its id."""
    conversation_id = conversations.create_conversation(r, owner, lifetimes)
    for text in ("First", "Second"):
        run = runs.start_run(
            r, conversation_id, owner, lifetimes, SETTINGS, user_message=user_message(text)
        )
        runs.add_chunk(r, run, f"Reply to {text}", SETTINGS)
        runs.finish_run(r, run, runs.DONE, lifetimes, SETTINGS)
    conversation = conversations.get_conversation(r, conversation_id)
    resume_codes.park(r, SECRET, conversation, ttl=600)
    resume_codes.park(r, SECRET, conversation, ttl=600)  # the first is kept, marked used
    running = runs.start_run(
        r, conversation_id, owner, lifetimes, SETTINGS, user_message=user_message("Third")
    )
    runs.add_chunk(r, running, "Half a rep", SETTINGS)
    conversations.save_draft(r, conversation_id, "A thought")
    return conversation_id


def every_key(r):
    return set(r.scan_iter(match="rc:*"))


def test_deleting_removes_every_key_codes_and_references(redis, lifetimes):
    kept = conversations.create_conversation(redis, OWNER, lifetimes)
    before = every_key(redis)
    doomed = busy_conversation(redis, lifetimes)
    assert len(list(redis.scan_iter(match=keys.RESUME_CODES_PATTERN))) == 2
    deleted = deletion.delete_conversation(redis, doomed, OWNER)
    # 8 keys of its own, 3 runs' events, 2 codes
    assert deleted == deletion.Deleted(conversations=1, keys=13)
    assert every_key(redis) - {keys.RUNS_RUNNING, keys.METRICS_COUNTERS} == before - {
        keys.RUNS_RUNNING
    }
    assert redis.zrange(keys.owner_conversations(OWNER), 0, -1) == [kept]
    assert redis.zrange(keys.RUNS_RUNNING, 0, -1) == []


def test_deleting_issues_no_scan(real_redis, lifetimes):
    doomed = busy_conversation(real_redis, lifetimes)
    for _ in range(200):  # a keyspace worth walking
        conversations.create_conversation(real_redis, "guest:other", lifetimes)

    def scans():
        stats = real_redis.info("commandstats")
        return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("scan", "keys"))

    before = scans()
    assert deletion.delete_conversation(real_redis, doomed, OWNER).conversations == 1
    assert scans() == before
    assert not set(real_redis.scan_iter(match=keys.conversation_keys_pattern(doomed)))


def test_another_owner_cannot_delete_it(redis, lifetimes):
    conversation_id = busy_conversation(redis, lifetimes)
    assert deletion.delete_conversation(redis, conversation_id, "guest:intruder") == (
        deletion.Deleted(0, 0)
    )
    assert conversations.get_conversation(redis, conversation_id) is not None
    assert len(list(redis.scan_iter(match=keys.RESUME_CODES_PATTERN))) == 2


def test_only_expired_keeps_a_conversation_whose_user_came_back(redis, lifetimes):
    alive = busy_conversation(redis, lifetimes)
    expired = conversations.create_conversation(redis, OWNER, lifetimes)
    redis.delete(keys.conversation_session(expired))
    owners = {alive: OWNER, expired: OWNER}
    assert deletion.delete_conversations(redis, owners, only_expired=True).conversations == 1
    assert conversations.get_conversation(redis, alive) is not None
    assert conversations.get_conversation(redis, expired) is None


def test_a_run_started_between_the_read_and_the_delete_goes_too(real_redis, lifetimes):
    conversation_id = busy_conversation(real_redis, lifetimes)
    run = runs.latest_run(real_redis, conversation_id)
    runs.finish_run(real_redis, run, runs.DONE, lifetimes, SETTINGS)
    original_pipeline = real_redis.pipeline
    started = []

    def pipeline_that_lets_a_run_start_after_the_read(*args, **kwargs):
        pipe = original_pipeline(*args, **kwargs)
        execute = pipe.execute

        def execute_then_start(*a, **k):
            answers = execute(*a, **k)
            if not started:  # right after deletion read the runs, another tab sends
                started.append("sent")
                sneaky = runs.start_run(
                    real_redis,
                    conversation_id,
                    OWNER,
                    lifetimes,
                    SETTINGS,
                    user_message=user_message("Sneaky"),
                )
                runs.add_chunk(real_redis, sneaky, "Late", SETTINGS)
            return answers

        pipe.execute = execute_then_start
        return pipe

    real_redis.pipeline = pipeline_that_lets_a_run_start_after_the_read
    try:
        deleted = deletion.delete_conversation(real_redis, conversation_id, OWNER)
    finally:
        real_redis.pipeline = original_pipeline
    assert started and deleted.conversations == 1
    assert not set(real_redis.scan_iter(match=keys.conversation_keys_pattern(conversation_id)))


@pytest.mark.parametrize("how", ["owner", "admin"])
def test_delete_through_the_page_and_the_console_leaves_nothing(
    how, chat, real_redis, make_app, chat_factory
):
    conversation_id = chat.start_conversation("Forget me")
    chat.client.post(
        f"/c/{conversation_id}/park",
        data={"csrf_token": chat.form_fields(f"/c/{conversation_id}")["csrf_token"]},
    )
    assert list(real_redis.scan_iter(match=keys.RESUME_CODES_PATTERN))
    if how == "owner":
        token = chat.form_fields(f"/c/{conversation_id}")["csrf_token"]
        response = chat.client.post(
            f"/c/{conversation_id}/delete", data={"csrf_token": token, "confirm": "yes"}
        )
        assert response.status_code == 302
    else:
        assert audit.clear_conversation(real_redis, conversation_id, "root").conversations == 1
    assert not set(real_redis.scan_iter(match=keys.conversation_keys_pattern(conversation_id)))
    assert not list(real_redis.scan_iter(match=keys.RESUME_CODES_PATTERN))
    assert chat.client.get(f"/c/{conversation_id}").status_code == 404


def test_a_conversation_from_before_runs_were_listed_is_deleted_too(redis, lifetimes):
    """Data written before conversations listed their runs: a run hash, its events, no runs
    index. Deleting it still deletes everything."""
    conversation_id = busy_conversation(redis, lifetimes)
    redis.delete(keys.conversation_runs(conversation_id))
    deleted = deletion.delete_conversation(redis, conversation_id, OWNER)
    assert deleted.conversations == 1
    assert conversations.get_conversation(redis, conversation_id) is None
    latest = runs.latest_run(redis, conversation_id)
    assert latest is None
