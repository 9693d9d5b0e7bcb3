"""The Lua scripts as a module: each documents its keys, arguments and answer; refusals
reach callers as domain exceptions; a server that lost its scripts gets them again."""

import re

import pytest
import redis as redis_py

from webapp import conversations, runs
from webapp.conversations import ConversationGone, Message
from webapp.runs import RunInProgress, SessionExpired
from webapp.storage import keys, scripts
from webapp.storage.scripts import ALL_SCRIPTS, AtomicScript


def every_script():
    """Each script by name, and each write's form with_indexes as ``NAME.with_indexes``."""
    named = {
        name: value for name, value in vars(scripts).items() if isinstance(value, AtomicScript)
    }
    return named | {
        f"{name}.with_indexes": script.with_indexes
        for name, script in named.items()
        if script.with_indexes
    }


def test_every_script_is_registered_once():
    assert sorted(every_script().values(), key=id) == sorted(ALL_SCRIPTS, key=id)
    assert len({script.sha for script in ALL_SCRIPTS}) == len(ALL_SCRIPTS)


@pytest.mark.parametrize("name", sorted(every_script()))
def test_every_script_documents_its_keys_arguments_and_answer(name):
    source = every_script()[name].source
    own = source.split('"""')[-1] if '"""' in source else source
    header = "\n".join(line for line in own.splitlines() if line.startswith("--"))
    assert "KEYS[" in header, f"{name} does not say which keys it takes"
    assert "Returns" in header, f"{name} does not say what it answers"
    used_args = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", own)}
    for number in used_args:
        assert re.search(rf"ARGV\[{number}\]|ARGV\[\d+\.\.\]|ARGV\[2n", header) or (
            "ARGV field" in header
        ), f"{name} uses ARGV[{number}] without saying what it is"


@pytest.mark.parametrize(
    ("code", "exception"),
    [
        (scripts.CONVERSATION_GONE, ConversationGone),
        (scripts.RUN_IN_PROGRESS, RunInProgress),
        (scripts.SESSION_EXPIRED, SessionExpired),
    ],
)
def test_each_refusal_is_raised_as_its_domain_exception(code, exception):
    alone = redis_py.exceptions.ResponseError(f"{code} because")
    annotated = redis_py.exceptions.ResponseError(
        f"Command # 1 (EVALSHA abc 9 k) of pipeline caused error: {code} because"
    )
    assert isinstance(scripts.as_domain_error(alone), exception)
    assert isinstance(scripts.as_domain_error(annotated), exception)


def test_redis_own_errors_are_not_taken_for_refusals():
    for text in ("BUSY Redis is busy running a script", "NOSCRIPT No matching script", "ERR x"):
        error = redis_py.exceptions.ResponseError(text)
        assert scripts.as_domain_error(error) is error
    # A message whose text merely quotes a refusal is not one either.
    quoted = redis_py.exceptions.ResponseError("ERR value is 'RC_GONE'")
    assert scripts.as_domain_error(quoted) is quoted


def test_a_refusal_from_the_server_arrives_as_the_domain_exception(redis, lifetimes):
    message = Message(conversations.new_id(), "user", "Hi", 0)
    with pytest.raises(ConversationGone):
        conversations.append_message_and_touch(redis, "no-such-id", "guest:x", message, lifetimes)
    conversation_id = conversations.create_conversation(redis, "guest:x", lifetimes)
    redis.delete(keys.conversation_session(conversation_id))
    with pytest.raises(SessionExpired):
        runs.start_run(
            redis,
            conversation_id,
            "guest:x",
            lifetimes,
            runs.RunSettings(100, 60, 1, 5, 1000),
            user_message=message,
        )


def test_a_server_that_lost_its_scripts_runs_them_once_more(real_redis, lifetimes):
    conversation_id = conversations.create_conversation(real_redis, "guest:x", lifetimes)
    real_redis.script_flush()
    message = Message(conversations.new_id(), "user", "After a restart", 0)
    assert conversations.append_message_and_touch(
        real_redis, conversation_id, "guest:x", message, lifetimes
    )
    assert real_redis.llen(keys.conversation_messages(conversation_id)) == 1  # once, not twice
    assert all(real_redis.script_exists(*(script.sha for script in ALL_SCRIPTS)))
