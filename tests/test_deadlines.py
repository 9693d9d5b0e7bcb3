"""The deadline mirrors: counts by state that follow every transition, as time passes, at a
cost that does not grow with the number of conversations; sweeps that read only what has
ended; and the repair that recounts from scratch. Expiry here is Redis' own, by real TTLs
of a second or two."""

import time
from collections import Counter

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from tests.test_lifecycle import INDEX_WRITES, apply_writes
from webapp import cli, conversations, deadlines, deletion, lifecycle, resume_codes
from webapp.admin import listing
from webapp.conversations import Lifetimes
from webapp.llm.offline import OfflineProvider
from webapp.storage import keys
from webapp.storage.scan import scan_page

SECRET = "deadlines-secret"
SHORT = Lifetimes(session_idle=1, session_max=60, transcript_retention=3)
"""Sessions that end after a second idle, transcripts three seconds after their last write."""


@pytest.fixture(params=["real", "cluster"])
def server(request):
    return request.getfixturevalue(f"{request.param}_redis")


def truth(r) -> dict[str, int]:
    """The counts by state as the conversations' own keys say, walking every one (O(N))."""
    found = Counter(state for _id, _owner, state in listing.walk_conversations(r))
    return {state: found[state] for state in listing.STATES}


def counts(**by_state) -> dict[str, int]:
    return {state: by_state.get(state, 0) for state in listing.STATES}


def wait_until(condition, timeout=6):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "it did not happen in time"
        time.sleep(0.05)


def test_the_counts_follow_every_transition_as_it_happens(server, lifetimes):
    owner = "guest:counted"
    talking = conversations.create_conversation(server, owner, lifetimes)
    idle = conversations.create_conversation(server, owner, SHORT)
    parked = conversations.create_conversation(server, owner, lifetimes)
    assert listing.count_states(server) == truth(server) == counts(active=3)

    issued = resume_codes.park(server, SECRET, conversations.get_conversation(server, parked), 600)
    assert listing.count_states(server) == truth(server) == counts(active=2, parked=1)

    # The idle one's session ends by its TTL: no sweep is needed for the count to follow.
    wait_until(lambda: not server.exists(keys.conversation_session(idle)))
    time.sleep(0.05)
    assert listing.count_states(server) == truth(server) == counts(active=1, parked=1, expired=1)

    resume_codes.redeem_for(server, resume_codes.look_up(SECRET, issued.code), owner, lifetimes)
    assert listing.count_states(server) == truth(server) == counts(active=2, expired=1)

    lifecycle.catch_up(server, OfflineProvider(), idle, owner, lifetimes, 1000)
    assert listing.count_states(server) == truth(server) == counts(active=3)

    lifecycle.touch(server, conversations.get_conversation(server, talking), lifetimes)
    deletion.delete_conversations(server, {talking: owner})
    assert listing.count_states(server) == truth(server) == counts(active=2)


def test_a_whole_conversation_ending_leaves_the_counts_and_then_its_owners_index(server):
    owner = "guest:leaving"
    ending = conversations.create_conversation(server, owner, SHORT)
    kept = conversations.create_conversation(server, owner, Lifetimes(60, 3600, 600))
    wait_until(lambda: not server.exists(keys.conversation_meta(ending)))
    time.sleep(0.05)
    assert listing.count_states(server) == truth(server) == counts(active=1)
    assert server.zscore(keys.owner_conversations(owner), ending) is not None

    swept = deadlines.sweep(server)
    assert swept.conversations_gone == 1
    assert swept.sessions_ended == 0  # it went whole: no expired conversation to come back to
    assert server.zrange(keys.owner_conversations(owner), 0, -1) == [kept]
    assert server.zscore(keys.DEADLINES_CONVERSATIONS, ending) is None
    assert server.hget(keys.DEADLINES_OWNERS, ending) is None
    assert server.hget(keys.DEADLINES_OWNERS, kept) == owner


def test_a_session_capped_by_its_maximum_age_ends_in_the_counts_then(real_redis):
    capped = Lifetimes(session_idle=60, session_max=1, transcript_retention=600)
    conversation_id = conversations.create_conversation(real_redis, "guest:capped", capped)
    lifecycle.touch(real_redis, conversations.get_conversation(real_redis, conversation_id), capped)
    wait_until(lambda: not real_redis.exists(keys.conversation_session(conversation_id)))
    time.sleep(0.05)
    assert listing.count_states(real_redis) == truth(real_redis) == counts(expired=1)


def test_the_sweep_reads_only_the_sessions_that_ended_and_counts_each_once(real_redis, lifetimes):
    owner = "guest:swept"
    for _ in range(200):
        conversations.create_conversation(real_redis, owner, lifetimes)
    ending = [conversations.create_conversation(real_redis, owner, SHORT) for _ in range(3)]
    wait_until(lambda: not any(real_redis.exists(keys.conversation_session(c)) for c in ending))

    before = real_redis.info("commandstats")
    swept = deadlines.sweep(real_redis, batch=2)
    after = real_redis.info("commandstats")

    def calls(command):
        return after.get(f"cmdstat_{command}", {}).get("calls", 0) - before.get(
            f"cmdstat_{command}", {}
        ).get("calls", 0)

    assert swept.sessions_ended == 3
    assert calls("hmget") == 3  # one read of each session that ended, none of the 200 others
    assert calls("scan") == calls("keys") == 0
    assert all(real_redis.hexists(keys.conversation_meta(c), "session_ended") for c in ending)
    assert deadlines.sweep(real_redis).sessions_ended == 0  # counted once

    # Catching up starts a new session; when that one ends, it is counted again.
    lifecycle.catch_up(real_redis, OfflineProvider(), ending[0], owner, SHORT, 1000)
    assert not real_redis.hexists(keys.conversation_meta(ending[0]), "session_ended")
    wait_until(lambda: not real_redis.exists(keys.conversation_session(ending[0])))
    assert deadlines.sweep(real_redis).sessions_ended == 1


def test_the_sweep_gives_a_lagging_mirror_the_true_deadline(real_redis, lifetimes):
    conversation_id = conversations.create_conversation(real_redis, "guest:lagging", lifetimes)
    truly_ends = float(real_redis.hget(keys.conversation_session(conversation_id), "expires_at"))
    # As if the mirror of its last slide was lost (a cluster's second step): due too early.
    real_redis.zadd(keys.DEADLINES_SESSIONS, {conversation_id: time.time() - 1})
    assert listing.count_states(real_redis) == counts(expired=1) != truth(real_redis)
    assert deadlines.sweep(real_redis).sessions_ended == 0
    assert real_redis.zscore(keys.DEADLINES_SESSIONS, conversation_id) == truly_ends
    assert listing.count_states(real_redis) == truth(real_redis) == counts(active=1)


def test_a_write_to_a_conversation_that_has_ended_mirrors_nothing(real_redis):
    conversation_id = conversations.create_conversation(real_redis, "guest:late", SHORT)
    wait_until(lambda: not real_redis.exists(keys.conversation_session(conversation_id)))
    conversation = conversations.get_conversation(real_redis, conversation_id)
    assert lifecycle.touch(real_redis, conversation, SHORT) == -1  # refused: the session is gone
    assert listing.count_states(real_redis) == truth(real_redis) == counts(expired=1)


def test_a_refused_write_leaves_the_indexes_alone(real_redis, lifetimes):
    """On one server a write and its indexes' step are one script: a write the script
    refuses (the conversation is gone) lists nothing in the owner's index."""
    gone = conversations.new_id()
    message = conversations.Message(conversations.new_id(), "user", "Hello?", time.time())
    with pytest.raises(conversations.ConversationGone):
        conversations.append_message_and_touch(real_redis, gone, "guest:gone", message, lifetimes)
    assert not real_redis.exists(keys.owner_conversations("guest:gone"))
    assert real_redis.zscore(keys.DEADLINES_CONVERSATIONS, gone) is None


def test_a_slide_that_begins_a_session_again_mirrors_its_new_maximum_age(real_redis):
    """A message to a conversation whose session key is gone begins a session (the
    script's slide starts one): on one server the mirrors take it from what the script did,
    its end and its maximum age's from now."""
    lives = Lifetimes(session_idle=30, session_max=40, transcript_retention=600)
    conversation_id = conversations.create_conversation(real_redis, "guest:again", lives)
    session = keys.conversation_session(conversation_id)
    real_redis.delete(session)
    real_redis.zadd(keys.DEADLINES_SESSION_CAPS, {conversation_id: 1})  # an old cap
    before = time.time()
    message = conversations.Message(conversations.new_id(), "user", "Back", time.time())
    conversations.append_message_and_touch(real_redis, conversation_id, "guest:x", message, lives)
    after = time.time()
    cap = real_redis.zscore(keys.DEADLINES_SESSION_CAPS, conversation_id)
    assert before + 40 <= cap <= after + 40
    ends = real_redis.zscore(keys.DEADLINES_SESSIONS, conversation_id)
    assert before + 30 - 1 <= ends <= after + 30
    assert real_redis.ttl(session) > 0


def test_a_repeated_message_mirrors_nothing(real_redis, lifetimes):
    """A message sent again is not stored and slides nothing: on one server its mirror,
    taken from what the script did, leaves the session's deadline as it was."""
    conversation_id = conversations.create_conversation(real_redis, "guest:again", lifetimes)
    message = conversations.Message(conversations.new_id(), "user", "Once", time.time())
    conversations.append_message_and_touch(
        real_redis, conversation_id, "guest:again", message, lifetimes
    )
    marked = time.time() + 5  # a deadline no slide would give
    real_redis.zadd(keys.DEADLINES_SESSIONS, {conversation_id: marked})
    assert not conversations.append_message_and_touch(
        real_redis, conversation_id, "guest:again", message, lifetimes
    )
    assert real_redis.zscore(keys.DEADLINES_SESSIONS, conversation_id) == marked


def test_repair_mirrors_everything_afresh_and_forgets_what_is_gone(
    monkeypatch, redis_server, real_redis, lifetimes
):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("FLASK_SECRET_KEY", "x")
    owner = "guest:repaired"
    made = [conversations.create_conversation(real_redis, owner, lifetimes) for _ in range(5)]
    resume_codes.park(real_redis, SECRET, conversations.get_conversation(real_redis, made[0]), 600)
    real_redis.delete(keys.conversation_session(made[1]))  # ended, as an upgrade finds it
    real_redis.delete(*keys.conversation_keys(made[2]))  # gone without its mirror knowing
    real_redis.delete(*keys.DEADLINES[2:])  # written before the mirrors of sessions existed
    assert listing.count_states(real_redis) != truth(real_redis)

    result = CliRunner().invoke(cli.main, ["repair"])
    assert result.exit_code == 0, result.output
    assert "Mirrored 4 conversations (3 with a session, 1 parked)" in result.output
    assert "removed 1 stale index entry" in result.output
    assert (
        listing.count_states(real_redis)
        == truth(real_redis)
        == counts(active=2, parked=1, expired=1)
    )
    assert real_redis.zscore(keys.DEADLINES_CONVERSATIONS, made[2]) is None
    assert set(real_redis.hkeys(keys.DEADLINES_OWNERS)) == set(made) - {made[2]}


def assert_mirrored(r, conversation_id: str) -> None:
    """Each deadline of the conversation is mirrored as its keys have it (to a second: a
    new session's expires_at is stored in whole seconds)."""
    now = time.time()
    meta = keys.conversation_meta(conversation_id)
    assert r.zscore(keys.DEADLINES_CONVERSATIONS, conversation_id) == pytest.approx(
        r.pexpiretime(meta) / 1000, abs=1.5
    )
    assert r.hget(keys.DEADLINES_OWNERS, conversation_id) == r.hget(meta, "owner")
    expires_at, parked_until = r.hmget(
        keys.conversation_session(conversation_id), "expires_at", "parked_until"
    )
    mirrored = r.zscore(keys.DEADLINES_SESSIONS, conversation_id)
    if expires_at is None:
        assert mirrored is None or mirrored <= now
    else:
        assert mirrored == pytest.approx(float(expires_at), abs=1.5)
    parked = r.zscore(keys.DEADLINES_PARKED, conversation_id)
    if float(parked_until or 0) > now:
        assert parked == pytest.approx(float(parked_until), abs=1.5)
    else:
        assert parked is None or parked <= now


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=INDEX_WRITES)
def test_property_every_deadline_is_mirrored_after_any_writes(real_redis, sequence):
    apply_writes(real_redis, sequence)
    _, found = scan_page(real_redis, 0, match=keys.CONVERSATION_META_PATTERN, count=10_000)
    for conversation_id in (keys.conversation_id_of(key) for key in found):  # forks too
        assert_mirrored(real_redis, conversation_id)
    assert listing.count_states(real_redis) == truth(real_redis)


def assert_mirrored_as_its_keys_say(r, conversation_id: str, lifetimes: Lifetimes) -> None:
    """The mirrors' deadlines of a conversation are when its own keys end (their TTLs), and
    its session's cap is its start plus the maximum age."""
    started = float(r.hget(keys.conversation_session(conversation_id), "started_at"))
    now = time.time()
    ends = {
        keys.DEADLINES_CONVERSATIONS: keys.conversation_meta(conversation_id),
        keys.DEADLINES_SESSIONS: keys.conversation_session(conversation_id),
    }
    for mirror, key in ends.items():
        expected = now + r.pttl(key) / 1000
        assert r.zscore(mirror, conversation_id) == pytest.approx(expected, abs=1.5), mirror
    cap = r.zscore(keys.DEADLINES_SESSION_CAPS, conversation_id)
    assert cap == pytest.approx(started + lifetimes.session_max, abs=1.5)


def test_each_mirrored_deadline_is_when_its_own_key_ends(server):
    """Three lifetimes apart, so that one taken for another shows."""
    distinct = Lifetimes(session_idle=100, session_max=1_000, transcript_retention=10_000)
    owner = "guest:timed"
    conversation_id = conversations.create_conversation(server, owner, distinct)
    assert_mirrored_as_its_keys_say(server, conversation_id, distinct)
    # The next write slides by other lifetimes (as after a change of settings), so a slide
    # left out of the mirrors shows at once, without waiting for the clock to move them.
    longer = Lifetimes(session_idle=200, session_max=1_000, transcript_retention=20_000)
    message = conversations.Message(conversations.new_message_id(), "user", "Hi", time.time())
    conversations.append_message_and_touch(server, conversation_id, owner, message, longer)
    assert server.pttl(keys.conversation_session(conversation_id)) > 150_000  # it slid
    assert_mirrored_as_its_keys_say(server, conversation_id, longer)
