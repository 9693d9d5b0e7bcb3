"""R4 and R5: concurrent appends to one conversation, and writes retried after a dropped
connection, are each stored exactly once and in one order."""

import json
import threading
import time
from collections import Counter

import redis as redis_py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chaos.flaky_proxy import FlakyProxy
from webapp.conversations import (
    Lifetimes,
    Message,
    append_message_and_touch,
    create_conversation,
    read_messages,
)
from webapp.storage import connect, keys
from webapp.storage.scripts import APPEND_MESSAGE_AND_TOUCH

OWNER = "guest:concurrency"
JOIN_TIMEOUT_SECONDS = 60


def make_message(writer: int, number: int) -> Message:
    return Message(
        id=f"writer{writer}-message{number:03d}",
        role="user",
        content=f"message {number} from writer {writer}",
        created_at=time.time(),
    )


def writer_of(message_id: str) -> int:
    return int(message_id.removeprefix("writer").split("-")[0])


def join_all(threads: list[threading.Thread]) -> None:
    """Wait for the threads, failing if any is still running at the deadline."""
    deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
    for thread in threads:
        thread.join(max(0, deadline - time.monotonic()))
        assert not thread.is_alive(), f"{thread.name} still running after {JOIN_TIMEOUT_SECONDS} s"


class Worker(threading.Thread):
    """A thread that keeps the first exception it raised, for the test to re-raise."""

    def __init__(self, name: str, work) -> None:
        super().__init__(name=name, daemon=True)
        self.work = work
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as error:
            self.error = error


def raise_first_error(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.error is not None:
            raise AssertionError(f"{worker.name} failed") from worker.error


def stored_ids(r, conversation_id: str) -> list[str]:
    return [message.id for message in read_messages(r, conversation_id)]


def assert_exactly_once_in_writer_order(ids: list[str], sent: dict[int, list[Message]]) -> None:
    duplicates = {message_id: n for message_id, n in Counter(ids).items() if n > 1}
    assert not duplicates, f"stored more than once: {duplicates}"
    assert set(ids) == {m.id for messages in sent.values() for m in messages}
    for writer, messages in sent.items():
        assert [i for i in ids if writer_of(i) == writer] == [m.id for m in messages], (
            f"writer {writer}'s messages are out of the order it sent them"
        )


def assert_lifetimes_set(r, conversation_id: str, lifetimes: Lifetimes) -> None:
    meta, messages, session, recent_ids, *_ = keys.conversation_keys(conversation_id)
    retention = lifetimes.transcript_retention
    for key in (meta, messages, recent_ids, keys.owner_conversations(OWNER)):
        assert retention - 10 < r.ttl(key) <= retention, f"{key} has TTL {r.ttl(key)}"
    assert lifetimes.session_idle - 10 < r.ttl(session) <= lifetimes.session_idle


# R4 -----------------------------------------------------------------------------------------

WRITERS = 8
MESSAGES_PER_WRITER = 50
READERS = 3
RACED_EVERY = 10
"""Every this many messages, a writer sends the message from two connections at once, as a
resent form racing the original would."""


def test_hundreds_of_concurrent_appends_are_stored_once_in_one_order(
    real_redis, redis_server, lifetimes, record_property
):
    """8 writers x 50 appends, each on its own connection, some raced by a duplicate: every
    message is stored once, each writer's in its order, and every reader polling meanwhile
    sees a prefix of the final list whose length is the meta hash's count."""
    conversation_id = create_conversation(real_redis, OWNER, lifetimes)
    meta, messages_key, *_ = keys.conversation_keys(conversation_id)
    sent = {w: [make_message(w, n) for n in range(MESSAGES_PER_WRITER)] for w in range(WRITERS)}
    start = threading.Barrier(WRITERS + READERS, timeout=JOIN_TIMEOUT_SECONDS)
    writing_done = threading.Event()
    snapshots: dict[int, list[tuple[list[str], int]]] = {r: [] for r in range(READERS)}
    raced_results: list[list[bool]] = []

    def write(writer: int) -> None:
        with connect(redis_server.url) as tab, connect(redis_server.url) as racer:
            start.wait()
            for number, message in enumerate(sent[writer]):
                if number % RACED_EVERY == 0:
                    raced_results.append(sorted(race(tab, racer, message)))
                else:
                    assert append_message_and_touch(tab, conversation_id, OWNER, message, lifetimes)

    def race(tab, racer, message: Message) -> list[bool]:
        results = []

        def send_again():
            results.append(
                append_message_and_touch(racer, conversation_id, OWNER, message, lifetimes)
            )

        duplicate = Worker("racer", send_again)
        duplicate.start()
        results.append(append_message_and_touch(tab, conversation_id, OWNER, message, lifetimes))
        join_all([duplicate])
        raise_first_error([duplicate])
        return results

    def read(reader: int) -> None:
        with connect(redis_server.url) as client:
            start.wait()
            while True:
                finished = writing_done.is_set()
                pipe = client.pipeline(transaction=True)
                pipe.lrange(messages_key, 0, -1)
                pipe.hget(meta, "message_count")
                raw_messages, count = pipe.execute()
                ids = [json.loads(raw)["id"] for raw in raw_messages]
                snapshots[reader].append((ids, int(count or 0)))
                if finished:
                    return

    writers = [Worker(f"writer {w}", lambda w=w: write(w)) for w in range(WRITERS)]
    readers = [Worker(f"reader {r}", lambda r=r: read(r)) for r in range(READERS)]
    for worker in readers + writers:
        worker.start()
    try:
        join_all(writers)
    finally:
        writing_done.set()
    join_all(readers)
    raise_first_error(writers + readers)

    final = stored_ids(real_redis, conversation_id)
    total = WRITERS * MESSAGES_PER_WRITER
    assert_exactly_once_in_writer_order(final, sent)
    assert real_redis.hget(meta, "message_count") == str(total)
    assert raced_results and all(results == [False, True] for results in raced_results), (
        f"a raced duplicate was not stored exactly once: {raced_results}"
    )
    assert_lifetimes_set(real_redis, conversation_id, lifetimes)

    partial_views = 0
    for reader, views in snapshots.items():
        lengths = [len(ids) for ids, _ in views]
        assert lengths == sorted(lengths), f"reader {reader} saw the list shrink"
        for ids, count in views:
            assert ids == final[: len(ids)], f"reader {reader} saw a gap or a reordering"
            assert count == len(ids), f"reader {reader} saw count {count} for {len(ids)} messages"
        assert lengths[-1] == total
        partial_views += sum(0 < length < total for length in lengths)
    assert partial_views, "no reader looked while writing was going on"
    record_property("appends", total + len(raced_results))
    record_property("reader_snapshots", sum(len(views) for views in snapshots.values()))
    record_property("partial_snapshots", partial_views)


PROPERTY_WRITERS = 3
steps = st.lists(
    st.tuples(
        st.integers(0, PROPERTY_WRITERS - 1),
        st.sampled_from(["send", "send_reply_lost", "resend", "read"]),
        st.integers(0, 1000),
    ),
    max_size=40,
)
"""Interleavings of what several writers do: send a new message; send one whose reply is
lost (so the writer's next step starts by sending it again); resend one of its earlier
messages (a resubmitted form); read the conversation. Fewer appends than the dedupe window,
the span retries are promised within."""


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps)
def test_property_interleaved_writers_retries_and_reads(redis, steps):
    """Whatever the interleaving: each message is stored exactly once, each writer's in the
    order it sent them, every read sees what was stored so far with a matching count, and
    every key of the conversation has its lifetime."""
    redis.flushdb()
    lifetimes = Lifetimes(session_idle=100, session_max=1000, transcript_retention=10_000)
    conversation_id = create_conversation(redis, OWNER, lifetimes)
    meta = keys.conversation_meta(conversation_id)
    sent: dict[int, list[Message]] = {w: [] for w in range(PROPERTY_WRITERS)}
    reply_lost: dict[int, Message] = {}
    stored_so_far: list[str] = []

    def append(message: Message) -> bool:
        return append_message_and_touch(redis, conversation_id, OWNER, message, lifetimes)

    for writer, action, choice in steps:
        if writer in reply_lost:
            assert append(reply_lost.pop(writer)) is False, "a retry was stored twice"
        if action in ("send", "send_reply_lost"):
            message = make_message(writer, len(sent[writer]))
            stored = append(message)
            sent[writer].append(message)
            stored_so_far.append(message.id)
            if action == "send":
                assert stored is True
            else:
                reply_lost[writer] = message
        elif action == "resend" and sent[writer]:
            assert append(sent[writer][choice % len(sent[writer])]) is False
        elif action == "read":
            assert stored_ids(redis, conversation_id) == stored_so_far
            assert int(redis.hget(meta, "message_count") or 0) == len(stored_so_far)
    for message in reply_lost.values():
        assert append(message) is False, "a retry was stored twice"

    final = stored_ids(redis, conversation_id)
    assert final == stored_so_far
    assert_exactly_once_in_writer_order(final, sent)
    assert int(redis.hget(meta, "message_count") or 0) == len(final)
    if final:
        assert_lifetimes_set(redis, conversation_id, lifetimes)


# R5 -----------------------------------------------------------------------------------------

PROXIED_WRITERS = 6
PROXIED_MESSAGES_PER_WRITER = 40
DROP_EVERY = 4


def write_through_proxy(proxy: FlakyProxy, send) -> tuple[dict[int, list[Message]], int]:
    """Each writer sends its messages through ``proxy`` with ``send(client, message)`` on a
    client of its own built as the app builds it, sending a message again when the client
    gives up (as a user resubmits the form after the error page). Returns what was sent and
    how many times a client gave up."""
    sent = {
        w: [make_message(w, n) for n in range(PROXIED_MESSAGES_PER_WRITER)]
        for w in range(PROXIED_WRITERS)
    }
    gave_up = []
    start = threading.Barrier(PROXIED_WRITERS, timeout=JOIN_TIMEOUT_SECONDS)

    def write(writer: int) -> None:
        with connect(proxy.url) as client:
            start.wait()
            for message in sent[writer]:
                while True:
                    try:
                        send(client, message)
                        break
                    except redis_py.exceptions.ConnectionError:
                        gave_up.append(message.id)

    writers = [Worker(f"writer {w}", lambda w=w: write(w)) for w in range(PROXIED_WRITERS)]
    for writer in writers:
        writer.start()
    join_all(writers)
    raise_first_error(writers)
    return sent, len(gave_up)


def evalsha_message_id(command: list[bytes]) -> str:
    """The message id an APPEND_MESSAGE_AND_TOUCH call carries: its first argument."""
    key_count = int(command[2])
    return command[3 + key_count].decode()


def test_appends_retried_after_dropped_replies_are_stored_once(
    real_redis, redis_server, lifetimes, scripts_loaded, record_property
):
    """Writers append through a proxy that cuts the connection after every 4th append ran
    but before its reply arrived; the client retries by itself, and each message is still
    stored exactly once, in each writer's order."""
    conversation_id = create_conversation(real_redis, OWNER, lifetimes)
    already_stored = []

    def append(client, message: Message) -> None:
        if not append_message_and_touch(client, conversation_id, OWNER, message, lifetimes):
            already_stored.append(message.id)

    with FlakyProxy(
        redis_server.port,
        b"EVALSHA",
        drop_every=DROP_EVERY,
        script=APPEND_MESSAGE_AND_TOUCH.with_indexes.sha,
    ) as proxy:
        sent, gave_up = write_through_proxy(proxy, append)

    total = PROXIED_WRITERS * PROXIED_MESSAGES_PER_WRITER
    attempts = len(proxy.seen)
    final = stored_ids(real_redis, conversation_id)
    cut_ids = {evalsha_message_id(command) for command in proxy.cut}
    assert proxy.cut, "the proxy dropped no connection"
    assert_exactly_once_in_writer_order(final, sent)
    assert cut_ids <= set(already_stored), (
        "an append whose reply was dropped was not found already stored when sent again"
    )
    assert attempts >= total + len(proxy.cut), "a dropped append was not sent again"
    assert real_redis.hget(keys.conversation_meta(conversation_id), "message_count") == str(total)
    assert_lifetimes_set(real_redis, conversation_id, lifetimes)
    record_property("appends", total)
    record_property("drops", len(proxy.cut))
    record_property("retries", attempts - total)
    record_property("client_gave_up", gave_up)
    record_property("retries_answered_already_stored", len(already_stored))
    record_property("duplicates", len(final) - len(set(final)))


def test_without_message_ids_the_same_drops_duplicate(real_redis, redis_server, record_property):
    """The control: a plain RPUSH through the same proxy and the same client retries is
    stored once per attempt, so the drops that the test above survives do duplicate
    messages that carry no id to check."""
    messages_key = keys.conversation_messages("control")

    def push(client, message: Message) -> None:
        client.rpush(messages_key, message.to_json())

    with FlakyProxy(redis_server.port, b"RPUSH", drop_every=DROP_EVERY) as proxy:
        sent, _ = write_through_proxy(proxy, push)

    stored = [json.loads(raw)["id"] for raw in real_redis.lrange(messages_key, 0, -1)]
    duplicates = len(stored) - len(set(stored))
    assert set(stored) == {m.id for messages in sent.values() for m in messages}
    copies = Counter(stored)
    cuts = Counter(json.loads(command[2])["id"] for command in proxy.cut)
    assert cuts, "the proxy dropped no connection"
    assert len(stored) == len(proxy.seen), "a push the server received was not stored"
    assert all(copies[message_id] > n for message_id, n in cuts.items()), (
        "a push whose reply was dropped had not been stored before the drop"
    )
    record_property("drops", len(proxy.cut))
    record_property("duplicates", duplicates)
