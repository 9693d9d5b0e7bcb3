"""`python -m bench.peers`: the project's store against other chat histories kept in Redis,
one table, on one embedded server (`make bench-peers` installs the peers).

Each peer is used as its documentation shows, with its own TTL option set to the
transcript retention:

- langchain-community's RedisChatMessageHistory, one per conversation: ``add_message``
  sends LPUSH of the message's JSON, then EXPIRE; ``messages`` reads the whole list.
- llama-index's RedisChatStore, one key per conversation: ``add_message`` sends RPUSH, then
  EXPIRE; ``get_messages`` reads the whole list.
- a Flask-Session-style blob (``bench.workload.JsonBlobStore``): the history as one JSON
  value, read, decoded, encoded and written back with SET EX on every append.

The appends of all four, at 10 and at 10,000 messages, are timed in the same interleaved
rounds (see ``measurements.interleaved``), and so are their reads.
"""

import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version

import redis
from langchain_core.messages import AIMessage, HumanMessage
from llama_index.core.llms import ChatMessage
from llama_index.storage.chat_store.redis import RedisChatStore

from bench import measurements
from bench.measurements import (
    LARGE,
    LIFETIMES,
    P1_BLOB_SAMPLES,
    P1_ROUNDS,
    P1_SAMPLES,
    SMALL,
    AppendTarget,
    append_sampler,
    interleaved,
    seconds,
)
from bench.report import NONE, duration, machine, ratio, render, server_version, verdict
from bench.round_trips import recorded_writes
from bench.server import embedded_server
from bench.workload import realistic_messages
from webapp import conversations
from webapp.conversations import DEDUPE_WINDOW, Message, new_id
from webapp.storage import connect, keys

with warnings.catch_warnings():  # its notice that langchain-community is being sunset
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.chat_message_histories import RedisChatMessageHistory

RETENTION = LIFETIMES.transcript_retention
PAGE = 50
"""Messages read at once: a conversation page."""
RETRIES = 8
"""Times the same message is sent again after it was first sent, as a retried request."""
COUNTED_APPENDS = 20
"""Appends whose network writes are counted."""


@dataclass(frozen=True)
class History:
    """One conversation's history in one store, reached through that store's own API."""

    target: AppendTarget
    newest: Callable[[int], list]
    """The newest ``count`` messages, oldest first, read as the store's API allows."""
    redis_keys: Callable[[], list[str]]
    """The Redis keys that hold the history."""


@dataclass(frozen=True)
class Store:
    """A way to keep chat histories in Redis, and how many samples of it to time per round."""

    name: str
    convert: Callable[[Message], object]
    """The store's own kind of message for one of the bench's messages."""
    open: Callable[[list[Message]], History]
    """A new history holding the messages."""
    append_samples: tuple[int, int]
    """Appends timed per round at the small and at the large history."""
    read_samples: int
    """Reads of the newest page timed per round."""


def project(r: redis.Redis) -> Store:
    """Resume Chat's conversations: append_message_and_touch, read_page."""

    def open_history(messages: list[Message]) -> History:
        conversation_id = measurements.filled_conversation(r, messages)
        conversation = conversations.get_conversation(r, conversation_id)
        return History(
            target=measurements.app_target(r, conversation_id),
            newest=lambda count: conversations.read_page(r, conversation, count)[1],
            redis_keys=lambda: [
                key for key in keys.conversation_keys(conversation_id) if r.exists(key)
            ],
        )

    return Store("Resume Chat", lambda message: message, open_history, P1_SAMPLES, 100)


def langchain(url: str) -> Store:
    """langchain-community's RedisChatMessageHistory, made from the server's URL."""

    def convert(message: Message) -> AIMessage | HumanMessage:
        kind = HumanMessage if message.role == "user" else AIMessage
        return kind(content=message.content)

    def open_history(messages: list[Message]) -> History:
        history = RedisChatMessageHistory(session_id=new_id(), url=url, ttl=RETENTION)
        history.add_messages([convert(message) for message in messages])
        return History(
            target=AppendTarget(
                append=history.add_message,
                undo=lambda: history.redis_client.lpop(history.key),  # it has no API for this
            ),
            newest=lambda count: history.messages[-count:],
            redis_keys=lambda: [history.key],
        )

    return Store("langchain", convert, open_history, P1_SAMPLES, 2)


def llama_index(url: str) -> Store:
    """llama-index's RedisChatStore, made from the server's URL, one key per conversation."""
    store = RedisChatStore(redis_url=url, ttl=RETENTION)

    def convert(message: Message) -> ChatMessage:
        return ChatMessage(role=message.role, content=message.content)

    def open_history(messages: list[Message]) -> History:
        key = new_id()
        store.set_messages(key, [convert(message) for message in messages])
        return History(
            target=AppendTarget(
                append=lambda message: store.add_message(key, message),
                undo=lambda: store.delete_last_message(key),
            ),
            newest=lambda count: store.get_messages(key)[-count:],
            redis_keys=lambda: [key],
        )

    return Store("llama-index", convert, open_history, P1_SAMPLES, 2)


def blob(r: redis.Redis) -> Store:
    """The whole history as one JSON value, as Flask-Session keeps a session."""

    def open_history(messages: list[Message]) -> History:
        store = measurements.blob_store(r, f"bench:peers:blob:{new_id()}", messages)
        return History(
            target=measurements.blob_target(store),
            newest=store.newest,
            redis_keys=lambda: [store.key],
        )

    return Store("blob", lambda message: message, open_history, P1_BLOB_SAMPLES, 5)


@dataclass(frozen=True)
class Measured:
    """What one store measured."""

    append_small: float
    append_large: float
    read_newest: float
    one_append: list[str]
    """The first command of each network write of one append."""
    writes_per_append: float
    keys_with_ttl: int
    keys: int
    stored_bytes: int
    """MEMORY USAGE of the large history's keys."""
    duplicates: int


def _medians(rounds: list[list[list[float]]]) -> list[float]:
    """The median of each sampler's samples over all rounds (as ``interleaved`` gives them)."""
    return [
        statistics.median(t for by_sampler in rounds for t in by_sampler[i])
        for i in range(len(rounds[0]))
    ]


def _append_medians(
    stores: Sequence[Store], small: Sequence[History], large: Sequence[History]
) -> list[float]:
    """Median seconds of one append, at the small then the large history of each store in
    turn; the same messages go to every store, all in the same interleaved rounds."""
    fresh = realistic_messages(P1_ROUNDS * max(P1_SAMPLES), seed=2)
    samplers, samples = [], []
    for store, *histories in zip(stores, small, large, strict=True):
        for history, count in zip(histories, store.append_samples, strict=True):
            mine = iter([store.convert(message) for message in fresh[: P1_ROUNDS * count]])
            samplers.append(append_sampler(history.target, mine))
            samples.append(count)
    return _medians(interleaved(samplers, samples))


def _retried(store: Store) -> tuple[History, int, list[str], list[str]]:
    """A new history that one message was sent to 1 + RETRIES times, then 1 +
    COUNTED_APPENDS others: the history, the duplicates it stored, the writes of the first
    of the others and the writes of the rest."""
    same, first, *counted = (
        store.convert(m) for m in realistic_messages(2 + COUNTED_APPENDS, seed=7)
    )
    history = store.open([])
    for _ in range(1 + RETRIES):
        history.target.append(same)
    duplicates = len(history.newest(PAGE)) - 1
    with recorded_writes() as one:
        history.target.append(first)
    with recorded_writes() as writes:
        for message in counted:
            history.target.append(message)
    return history, duplicates, one, writes


@dataclass(frozen=True)
class Comparison:
    """Every store's measurements, and the bytes of text in the large history."""

    stores: list[Store]
    measured: list[Measured]
    text_bytes: int


def compare(r: redis.Redis, stores: list[Store]) -> Comparison:
    """Every measurement of every store, on the server ``r`` is connected to."""
    history = realistic_messages(LARGE, seed=1)
    small = [store.open(history[:SMALL]) for store in stores]
    large = [store.open(history) for store in stores]
    appends = _append_medians(stores, small, large)
    reads = _medians(
        interleaved(
            [partial(seconds, each.newest, PAGE) for each in large],
            [store.read_samples for store in stores],
        )
    )
    measured = []
    for number, store in enumerate(stores):
        retried, duplicates, one, writes = _retried(store)
        ttls = [r.ttl(key) for key in retried.redis_keys()]
        measured.append(
            Measured(
                append_small=appends[2 * number],
                append_large=appends[2 * number + 1],
                read_newest=reads[number],
                one_append=one,
                writes_per_append=len(writes) / COUNTED_APPENDS,
                keys_with_ttl=sum(ttl > 0 for ttl in ttls),
                keys=len(ttls),
                stored_bytes=sum(
                    r.memory_usage(key, samples=0) for key in large[number].redis_keys()
                ),
                duplicates=duplicates,
            )
        )
    return Comparison(stores, measured, sum(len(m.content.encode()) for m in history))


@dataclass(frozen=True)
class Line:
    """One row of the table: the project's value first, then each peer's."""

    what: str
    values: list[str]
    versus: str
    """The project's value ÷ the best peer's."""
    goal: str
    passed: bool

    def cells(self) -> tuple[str, ...]:
        return (self.what, *self.values, self.versus, self.goal, verdict(self.passed))


AHEAD = "ahead or equal"


def _lower_is_better(
    what: str, values: list[float], show: Callable[[float], str], goal: str = AHEAD
) -> Line:
    """A row where less is better, passed when the project's value is at most the best peer's."""
    ours, best = values[0], min(values[1:])
    versus = ratio(ours / best) if best else NONE
    return Line(what, [show(value) for value in values], versus, goal, ours <= best)


def lines(comparison: Comparison) -> list[Line]:
    """The table's rows; the first is the issue's goal."""
    measured = comparison.measured
    kept = [one.keys_with_ttl / one.keys for one in measured]
    return [
        _lower_is_better(
            f"append at {SMALL} messages (median)",
            [one.append_small for one in measured],
            duration,
            "÷ fastest peer ≤ 1.0",
        ),
        _lower_is_better(
            f"append at {LARGE:,} messages (median)",
            [one.append_large for one in measured],
            duration,
        ),
        _lower_is_better(
            f"read the newest {PAGE} at {LARGE:,} messages (median)",
            [one.read_newest for one in measured],
            duration,
        ),
        _lower_is_better(
            "round trips per append", [one.writes_per_append for one in measured], "{:.2f}".format
        ),
        Line(
            "TTLs kept: keys of the history with a TTL after appends",
            [f"{one.keys_with_ttl} of {one.keys}" for one in measured],
            NONE,
            AHEAD,
            kept[0] >= max(kept[1:]),
        ),
        _lower_is_better(
            f"Redis bytes per byte of message text, at {LARGE:,} messages",
            [one.stored_bytes / comparison.text_bytes for one in measured],
            "{:.2f}".format,
        ),
        _lower_is_better(
            f"duplicates stored after {RETRIES} retries of one message",
            [one.duplicates for one in measured],
            "{:d}".format,
        ),
    ]


def goal_line(comparison: Comparison, table: list[Line]) -> str:
    """The issue's goal: the small append no slower than the fastest peer's, every other row
    ahead or equal."""
    headline, *others = table
    ahead = sum(line.passed for line in others)
    fastest = min(
        zip(comparison.stores[1:], comparison.measured[1:], strict=True),
        key=lambda peer: peer[1].append_small,
    )[0]
    return (
        f"Goal: Resume Chat's append at {SMALL} messages ÷ the fastest peer's ({fastest.name}) "
        f"= {headline.versus}, ≤ 1.0: {verdict(headline.passed)}; every other row ahead or "
        f"equal: {ahead} of {len(others)}, {verdict(ahead == len(others))}."
    )


def notes(comparison: Comparison) -> list[str]:
    """How the rows were measured, and what each store sends."""
    stores = comparison.stores
    pairs = list(zip(stores, comparison.measured, strict=True))
    appends = ", ".join(f"{s.name} {s.append_samples[0]} and {s.append_samples[1]}" for s in stores)
    reads = ", ".join(f"{store.name} {store.read_samples}" for store in stores)
    writes = "; ".join(f"{store.name} {', '.join(one.one_append)}" for store, one in pairs)
    stored = ", ".join(f"{store.name} {one.stored_bytes:,} B" for store, one in pairs)
    return [
        f"Appends: medians of single appends in {P1_ROUNDS} rounds, every store and size taking "
        f"turns in each, in an order shuffled for each turn ({appends} per round, at {SMALL} "
        f"and at {LARGE:,}); the same messages for every store, each append undone outside "
        "the timing.",
        f"Reads: medians in {P1_ROUNDS} rounds taking turns ({reads} per round). langchain's "
        "`messages` and llama-index's `get_messages` read and decode the whole history, and "
        "the blob is one value; Resume Chat reads one page (read_page, one round trip; the "
        "read of the conversation's meta that a page makes first is not timed).",
        f"Round trips: network writes (Connection.send_packed_command calls) of "
        f"{COUNTED_APPENDS} appends; one append's, by first command: {writes}.",
        f"Bytes: MEMORY USAGE SAMPLES 0 of each large history's keys ({stored}) ÷ "
        f"{comparison.text_bytes:,} B, the UTF-8 text of its messages. Beside the text, "
        "Resume Chat keeps each message's id and time and the ids of the newest "
        f"{DEDUPE_WINDOW} (for retries); llama-index's JSON has neither.",
        f"TTLs: each peer given its TTL option (ttl=, SET EX) of {RETENTION:,} s; langchain's "
        "and llama-index's are off unless given. Duplicates: one message sent 1 + "
        f"{RETRIES} times to a new history; the copies past the first.",
    ]


def versions() -> str:
    """The peers' packages and the client's."""
    packages = (
        "langchain-community",
        "langchain-core",
        "llama-index-core",
        "llama-index-storage-chat-store-redis",
        "redis",
    )
    return ", ".join(f"{package} {version(package)}" for package in packages)


def main() -> None:
    """Measure every store on a fresh embedded server and print the table."""
    started = time.perf_counter()
    with embedded_server("resume-chat-peers-") as (_, url):
        r = connect(url)
        info = r.info("server")
        comparison = compare(r, [project(r), langchain(url), llama_index(url), blob(r)])
    names = tuple(store.name for store in comparison.stores)
    table = lines(comparison)
    print(f"Resume Chat against its peers: {machine()}; {server_version(info)}; {versions()}")
    print("One run on a noisy shared machine; every store measured in it, on the same server.\n")
    headings = ("what is measured", *names, "÷ best peer", "goal", "result")
    print(render(table, headings, {*names, "÷ best peer"}))
    print()
    print(goal_line(comparison, table))
    for note in notes(comparison):
        print(note)
    print(f"\nFinished in {time.perf_counter() - started:.1f} s.")


if __name__ == "__main__":
    main()
