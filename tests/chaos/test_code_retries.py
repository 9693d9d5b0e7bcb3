"""R5 for resume codes: parking a session under a code and redeeming the code, retried
after a dropped connection lost the answer, happen once, and the code does what it said."""

from tests.chaos.flaky_proxy import FlakyProxy
from webapp import conversations, metrics, resume_codes
from webapp.storage import connect, keys
from webapp.storage.scripts import PARK_SESSION, RESUME_AND_SETTLE

SECRET = "code-retries-secret"
OWNER, VISITOR = "guest:left", "guest:came-back"


def parked_code(r, owner, lifetimes) -> tuple[str, str]:
    """A new conversation of ``owner`` parked under a code: its id and the code's hash."""
    conversation_id = conversations.create_conversation(r, owner, lifetimes)
    conversation = conversations.get_conversation(r, conversation_id)
    issued = resume_codes.park(r, SECRET, conversation, ttl=600)
    return conversation_id, resume_codes.look_up(SECRET, issued.code)


def test_a_park_whose_answer_was_lost_issues_a_code_that_works(
    real_redis, redis_server, lifetimes, scripts_loaded
):
    with (
        FlakyProxy(
            redis_server.port, b"EVALSHA", drop_every=2, script=PARK_SESSION.with_indexes.sha
        ) as proxy,
        connect(proxy.url) as client,
    ):
        parked_code(client, OWNER, lifetimes)
        # The second park runs, its answer is lost, and it is sent again: it finds its own
        # code, which it must not take for an older one to withdraw.
        conversation_id, digest = parked_code(client, OWNER, lifetimes)
    assert len(proxy.cut) == 1
    assert "used_at" not in real_redis.hgetall(keys.resume_code(digest))
    assert resume_codes.redeem_for(real_redis, digest, VISITOR, lifetimes) == conversation_id


def test_a_redemption_whose_answer_was_lost_stands_and_counts_once(
    real_redis, redis_server, lifetimes, scripts_loaded
):
    _, first = parked_code(real_redis, OWNER, lifetimes)
    conversation_id, second = parked_code(real_redis, OWNER, lifetimes)
    with (
        FlakyProxy(
            redis_server.port, b"EVALSHA", drop_every=2, script=RESUME_AND_SETTLE.sha
        ) as proxy,
        connect(proxy.url) as client,
    ):
        resume_codes.redeem_for(client, first, VISITOR, lifetimes)
        # The second redemption resumes the session, its answer is lost, and it is sent
        # again: the visitor is told it worked (it did), not that the code was used.
        assert resume_codes.redeem_for(client, second, VISITOR, lifetimes) == conversation_id
    assert len(proxy.cut) == 1
    assert conversations.get_conversation(real_redis, conversation_id).owner == VISITOR
    listed = {c.id for c in conversations.list_conversations(real_redis, VISITOR)}
    assert conversation_id in listed and len(listed) == 2
    assert conversations.list_conversations(real_redis, OWNER) == []
    counters = metrics.read_counters(real_redis)
    assert counters[metrics.REDEEMED_FIELD] == 2  # once each, not again when sent again
    assert not [name for name in counters if name.startswith("resume_failures:")]
