"""Conversation storage, on fakeredis and on the real server."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webapp import conversations
from webapp.conversations import (
    ConversationGone,
    Lifetimes,
    Message,
    MessageRejected,
    append_message_and_touch,
    create_conversation,
)
from webapp.storage import keys

OWNER = "guest:tester"


def message(text="hello", role="user", message_id=None):
    return Message(
        id=message_id or conversations.new_id(), role=role, content=text, created_at=time.time()
    )


def test_append_then_read_in_order(redis, lifetimes):
    cid = create_conversation(redis, OWNER, lifetimes)
    sent = [message(f"message {i}") for i in range(5)]
    for m in sent:
        assert append_message_and_touch(redis, cid, OWNER, m, lifetimes) is True
    assert conversations.read_messages(redis, cid) == sent
    conversation = conversations.get_conversation(redis, cid)
    assert conversation.message_count == 5
    assert conversation.owner == OWNER
    assert conversation.title == "message 0"


def test_same_id_twice_is_stored_once(redis, lifetimes):
    cid = create_conversation(redis, OWNER, lifetimes)
    m = message("only once")
    assert append_message_and_touch(redis, cid, OWNER, m, lifetimes) is True
    append_message_and_touch(redis, cid, OWNER, message("in between"), lifetimes)
    assert append_message_and_touch(redis, cid, OWNER, m, lifetimes) is False
    assert [x.content for x in conversations.read_messages(redis, cid)] == [
        "only once",
        "in between",
    ]


def test_an_id_inside_the_text_is_not_mistaken_for_a_message_id(redis, lifetimes):
    cid = create_conversation(redis, OWNER, lifetimes)
    first = message("x")
    spoof = message(f'{{"id":"{first.id}",')
    append_message_and_touch(redis, cid, OWNER, spoof, lifetimes)
    assert append_message_and_touch(redis, cid, OWNER, first, lifetimes) is True


def test_remembered_ids_are_capped_at_the_window(redis, lifetimes):
    cid = create_conversation(redis, OWNER, lifetimes)
    sent = [message(f"m{i}") for i in range(conversations.DEDUPE_WINDOW + 5)]
    for m in sent:
        append_message_and_touch(redis, cid, OWNER, m, lifetimes)
    remembered = redis.lrange(keys.conversation_recent_ids(cid), 0, -1)
    assert remembered == [m.id for m in reversed(sent)][: conversations.DEDUPE_WINDOW]
    assert append_message_and_touch(redis, cid, OWNER, sent[5], lifetimes) is False


def test_append_to_a_missing_conversation_raises_gone(redis, lifetimes):
    with pytest.raises(ConversationGone):
        append_message_and_touch(redis, "no-such-id", OWNER, message(), lifetimes)
    assert redis.exists(*keys.conversation_keys("no-such-id")) == 0


def test_malformed_message_id_is_refused(redis, lifetimes):
    cid = create_conversation(redis, OWNER, lifetimes)
    with pytest.raises(ValueError, match="malformed"):
        append_message_and_touch(redis, cid, OWNER, message(message_id="bad id!"), lifetimes)


def test_every_key_gets_its_lifetime(redis):
    lifetimes = Lifetimes(session_idle=50, session_max=3600, transcript_retention=500)
    cid = create_conversation(redis, OWNER, lifetimes)
    append_message_and_touch(redis, cid, OWNER, message(), lifetimes)
    meta, messages, session, recent_ids, *_ = keys.conversation_keys(cid)
    assert 490 < redis.ttl(meta) <= 500
    assert 490 < redis.ttl(messages) <= 500
    assert 490 < redis.ttl(recent_ids) <= 500
    assert 40 < redis.ttl(session) <= 50
    assert 490 < redis.ttl(keys.owner_conversations(OWNER)) <= 500


def test_session_lifetime_is_capped_by_its_maximum_age(redis):
    lifetimes = Lifetimes(session_idle=1000, session_max=30, transcript_retention=5000)
    cid = create_conversation(redis, OWNER, lifetimes)
    append_message_and_touch(redis, cid, OWNER, message(), lifetimes)
    assert 20 < redis.ttl(keys.conversation_session(cid)) <= 30


def test_session_expires_on_its_own_while_the_transcript_stays(real_redis):
    lifetimes = Lifetimes(session_idle=1, session_max=3600, transcript_retention=600)
    cid = create_conversation(real_redis, OWNER, lifetimes)
    append_message_and_touch(real_redis, cid, OWNER, message(), lifetimes)
    deadline = time.monotonic() + 5
    while real_redis.exists(keys.conversation_session(cid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not real_redis.exists(keys.conversation_session(cid))
    assert len(conversations.read_messages(real_redis, cid)) == 1


def test_read_page_returns_the_newest_and_pages_back(redis, lifetimes):
    cid = create_conversation(redis, OWNER, lifetimes)
    for i in range(7):
        append_message_and_touch(redis, cid, OWNER, message(f"m{i}"), lifetimes)
    conversation = conversations.get_conversation(redis, cid)
    start, page = conversations.read_page(redis, conversation, page_size=3)
    assert (start, [m.content for m in page]) == (4, ["m4", "m5", "m6"])
    start, page = conversations.read_page(redis, conversation, page_size=3, before=start)
    assert (start, [m.content for m in page]) == (1, ["m1", "m2", "m3"])
    start, page = conversations.read_page(redis, conversation, page_size=3, before=start)
    assert (start, [m.content for m in page]) == (0, ["m0"])
    assert conversations.read_page(redis, conversation, page_size=3, before=0) == (0, [])
    start, page = conversations.read_page(redis, conversation, page_size=3, before=99)
    assert (start, [m.content for m in page]) == (4, ["m4", "m5", "m6"])


def test_the_newest_page_has_messages_stored_after_the_conversation_was_read(redis, lifetimes):
    cid = create_conversation(redis, OWNER, lifetimes)
    append_message_and_touch(redis, cid, OWNER, message("question"), lifetimes)
    conversation = conversations.get_conversation(redis, cid)
    append_message_and_touch(redis, cid, OWNER, message("reply, stored meanwhile"), lifetimes)
    start, page = conversations.read_page(redis, conversation, page_size=50)
    assert (start, [m.content for m in page]) == (0, ["question", "reply, stored meanwhile"])


def test_owner_index_lists_most_recent_first_and_only_own(redis, lifetimes):
    first = create_conversation(redis, OWNER, lifetimes)
    second = create_conversation(redis, OWNER, lifetimes)
    create_conversation(redis, "guest:someone-else", lifetimes)
    time.sleep(0.01)
    append_message_and_touch(redis, first, OWNER, message("newest activity"), lifetimes)
    listed = conversations.list_conversations(redis, OWNER)
    assert [c.id for c in listed] == [first, second]


def test_sweep_removes_index_entries_of_gone_conversations(redis, lifetimes):
    kept = create_conversation(redis, OWNER, lifetimes)
    gone = create_conversation(redis, OWNER, lifetimes)
    other_gone = create_conversation(redis, "guest:other", lifetimes)
    redis.delete(*keys.conversation_keys(gone), *keys.conversation_keys(other_gone))
    assert conversations.sweep_indexes(redis, batch=1) == 2
    assert redis.zrange(keys.owner_conversations(OWNER), 0, -1) == [kept]
    assert conversations.sweep_indexes(redis) == 0


def test_sweep_never_uses_keys(real_redis, lifetimes):
    create_conversation(real_redis, OWNER, lifetimes)
    before = real_redis.info("commandstats").get("cmdstat_keys", {}).get("calls", 0)
    conversations.sweep_indexes(real_redis)
    after = real_redis.info("commandstats").get("cmdstat_keys", {}).get("calls", 0)
    assert after == before
    assert real_redis.info("commandstats")["cmdstat_scan"]["calls"] >= 1


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_rejected(text):
    with pytest.raises(MessageRejected, match="Type a message"):
        conversations.validate_user_text(text, 100)


def test_oversized_text_is_rejected_with_the_limit():
    assert conversations.validate_user_text("x" * 100, 100) == "x" * 100
    with pytest.raises(MessageRejected, match="the limit is 100"):
        conversations.validate_user_text("x" * 101, 100)


def test_title_is_one_shortened_line():
    assert conversations.make_title("  two\nlines ") == "two lines"
    assert len(conversations.make_title("word " * 100)) == conversations.TITLE_CHARS


@given(
    st.lists(
        st.tuples(st.text("ab ", min_size=1, max_size=3), st.sampled_from([" ", "\n ", "\t"])),
        max_size=120,
    )
)
def test_a_title_is_every_word_on_one_line_shortened(pieces):
    """It reads only the words that can show, but is the whole text's words on one line."""
    text = "".join(word + space for word, space in pieces)
    line = " ".join(text.split())
    limit = conversations.TITLE_CHARS
    assert conversations.make_title(text) == (
        line if len(line) <= limit else line[: limit - 1] + "…"
    )


# A sequence of operations on one conversation: append a new message, resend one of the
# messages already sent (a retry), or let the test check the invariants.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("new"), st.text(min_size=1, max_size=40)),
        st.tuples(st.just("retry"), st.integers(min_value=0, max_value=200)),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_property_append_read_and_ttl_invariants(redis, ops):
    """After any sequence of appends and retries: each message is stored exactly once, in
    the order first sent, the count matches, and every key has the lifetime it should."""
    redis.flushdb()
    lifetimes = Lifetimes(session_idle=100, session_max=1000, transcript_retention=10_000)
    cid = create_conversation(redis, OWNER, lifetimes)
    sent: list[Message] = []
    for kind, value in ops:
        if kind == "new":
            m = message(value)
            assert append_message_and_touch(redis, cid, OWNER, m, lifetimes) is True
            sent.append(m)
        elif sent:
            again = sent[value % len(sent)]
            assert append_message_and_touch(redis, cid, OWNER, again, lifetimes) is False
    assert conversations.read_messages(redis, cid) == sent
    meta, messages, session, recent_ids, *_ = keys.conversation_keys(cid)
    assert conversations.get_conversation(redis, cid).message_count == len(sent)
    assert 9_990 < redis.ttl(meta) <= 10_000
    assert 90 < redis.ttl(session) <= 100  # begun with the conversation, slid by each append
    if sent:
        assert 9_990 < redis.ttl(messages) <= 10_000
        assert 9_990 < redis.ttl(recent_ids) <= 10_000
    else:
        assert redis.exists(messages, recent_ids) == 0
