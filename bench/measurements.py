"""The measured rows: P1 append cost, P3 memory per message, P6 round trips per append."""

import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from bench.round_trips import recorded_writes
from bench.workload import JsonBlobStore, realistic_messages
from webapp import conversations, runs
from webapp.conversations import Lifetimes, Message
from webapp.runs import RunSettings
from webapp.storage import connect, keys

LIFETIMES = Lifetimes(session_idle=1800, session_max=86400, transcript_retention=604800)
OWNER = "bench-owner"
SMALL, LARGE = 10, 10_000
P1_ROUNDS = 5
P1_SAMPLES = (300, 300)
"""Appends timed per round at the small and at the large history."""
P1_BLOB_SAMPLES = (300, 20)
"""The same for the naive store, whose large append takes tens of milliseconds."""
PAST_WINDOW = 2 * conversations.DEDUPE_WINDOW
"""A history long enough that the append script's dedupe scan reads its full window."""
P3_MESSAGES = 2_000
P6_APPENDS = 500
ORDER_SEED = 11
"""Seeds the order of the samplers' turns (see interleaved): the same in every run."""


@dataclass(frozen=True)
class AppendTarget:
    """Something to append to, and how to take the append back so its size stays fixed;
    ``append`` takes the store's own kind of message."""

    append: Callable[[Any], object]
    undo: Callable[[], object]


@dataclass(frozen=True)
class AppendCosts:
    """Median seconds per append at the small and large history, and each round's ratio."""

    small: float
    large: float
    round_ratios: list[float]


def filled_conversation(r: redis.Redis, history: list[Message]) -> str:
    """A new conversation holding ``history``, appended one message at a time."""
    conversation_id = conversations.create_conversation(r, OWNER, LIFETIMES)
    for message in history:
        conversations.append_message_and_touch(r, conversation_id, OWNER, message, LIFETIMES)
    return conversation_id


def app_target(r: redis.Redis, conversation_id: str) -> AppendTarget:
    """The app's store: appends to the conversation; undo pops the newest message."""
    return AppendTarget(
        append=lambda m: conversations.append_message_and_touch(
            r, conversation_id, OWNER, m, LIFETIMES
        ),
        undo=lambda: r.rpop(keys.conversation_messages(conversation_id)),
    )


def blob_target(store: JsonBlobStore) -> AppendTarget:
    """The naive store; undo writes the history it holds now back."""
    snapshot = store.r.get(store.key)
    return AppendTarget(append=store.append, undo=lambda: store.r.set(store.key, snapshot))


def blob_store(r: redis.Redis, key: str, history: list[Message]) -> JsonBlobStore:
    """The naive store holding ``history``."""
    store = JsonBlobStore(r, key, LIFETIMES.transcript_retention)
    store.replace(history)
    return store


def seconds(call: Callable, *args) -> float:
    """How long ``call(*args)`` takes."""
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def append_sampler(target: AppendTarget, messages: Iterator) -> Callable[[], float]:
    """Times one append of the next of ``messages``, undoing it outside the timing."""

    def sample() -> float:
        elapsed = seconds(target.append, next(messages))
        target.undo()
        return elapsed

    return sample


def interleaved(
    samplers: Sequence[Callable[[], float]], samples: Sequence[int], rounds: int = P1_ROUNDS
) -> list[list[list[float]]]:
    """Seconds of each sample, by round and by sampler. Within a round the samplers take
    turns, one sample each, so a slow moment of the machine falls on all of them alike, in
    an order shuffled for each turn: in a fixed order a sampler would always follow the
    same other one, and a sample right after another library's code (its caches cold, its
    garbage to collect) costs more than one after its own."""
    order = random.Random(ORDER_SEED)
    timings = []
    for _ in range(rounds):
        by_sampler: list[list[float]] = [[] for _ in samplers]
        for turn in range(max(samples)):
            due = [number for number, count in enumerate(samples) if turn < count]
            order.shuffle(due)
            for number in due:
                by_sampler[number].append(samplers[number]())
        timings.append(by_sampler)
    return timings


def _append_costs(
    small: AppendTarget, large: AppendTarget, samples: tuple[int, int], seed: int
) -> AppendCosts:
    """Time single appends to both targets, interleaved, undoing each one outside the timing."""
    fresh = iter(realistic_messages(P1_ROUNDS * sum(samples), seed))
    rounds = interleaved([append_sampler(small, fresh), append_sampler(large, fresh)], samples)
    return AppendCosts(
        small=statistics.median(t for small_times, _ in rounds for t in small_times),
        large=statistics.median(t for _, large_times in rounds for t in large_times),
        round_ratios=[statistics.median(lt) / statistics.median(st) for st, lt in rounds],
    )


@dataclass(frozen=True)
class AppendCostResult:
    """P1 for the app's store, for the naive blob store, and for the app's store past the window."""

    app: AppendCosts
    blob: AppendCosts
    app_past_window: AppendCosts


def append_cost(r: redis.Redis) -> AppendCostResult:
    """P1: append cost at 10,000 vs 10 messages, for the app's store and the naive blob store."""
    history = realistic_messages(LARGE, seed=1)

    def app(messages: list[Message]) -> AppendTarget:
        return app_target(r, filled_conversation(r, messages))

    app_large = app(history)
    app_costs = _append_costs(app(history[:SMALL]), app_large, P1_SAMPLES, seed=2)
    app_past_window = _append_costs(app(history[:PAST_WINDOW]), app_large, P1_SAMPLES, seed=3)
    blob = _append_costs(
        blob_target(blob_store(r, "bench:blob:small", history[:SMALL])),
        blob_target(blob_store(r, "bench:blob:large", history)),
        P1_BLOB_SAMPLES,
        seed=4,
    )
    return AppendCostResult(app=app_costs, blob=blob, app_past_window=app_past_window)


@dataclass(frozen=True)
class MemoryUse:
    """Bytes Redis uses for the stored messages, against their JSON payload."""

    messages: int
    payload: int
    message_list: int
    per_conversation: dict[str, int]
    """The conversation's other keys that exist (meta, session, recent ids), by key name."""
    plain_list: int
    encoding: str


def memory_per_message(r: redis.Redis) -> MemoryUse:
    """P3: MEMORY USAGE of one conversation of realistic messages, and of a plain JSON list."""
    history = realistic_messages(P3_MESSAGES, seed=5)
    conversation_id = filled_conversation(r, history)
    message_list = keys.conversation_messages(conversation_id)
    others = [key for key in keys.conversation_keys(conversation_id) if key != message_list]
    plain_key = "bench:plain-list"
    r.rpush(plain_key, *(m.to_json() for m in history))
    return MemoryUse(
        messages=len(history),
        payload=sum(len(m.to_json().encode()) for m in history),
        message_list=r.memory_usage(message_list, samples=0),
        per_conversation={
            key.rsplit(":", 1)[-1]: size
            for key in others
            if (size := r.memory_usage(key, samples=0)) is not None  # absent: no draft, say
        },
        plain_list=r.memory_usage(plain_key, samples=0),
        encoding=r.object("encoding", message_list),
    )


@dataclass(frozen=True)
class RoundTrips:
    """Writes per append in steady state, the warm-up call's writes, and server-side commands."""

    appends: int
    writes: int
    warm_up: list[str]
    server_calls: dict[str, int]


def _command_calls(r: redis.Redis) -> dict[str, int]:
    """Calls per command so far, from INFO commandstats."""
    return {
        name.removeprefix("cmdstat_"): stats["calls"]
        for name, stats in r.info("commandstats").items()
    }


def round_trips_per_append(r: redis.Redis, url: str) -> RoundTrips:
    """P6: writes per append on a fresh client, after SCRIPT FLUSH as a server restart would."""
    conversation_id = conversations.create_conversation(r, OWNER, LIFETIMES)
    messages = iter(realistic_messages(P6_APPENDS + 1, seed=6))
    r.script_flush()
    client = connect(url)

    def append() -> None:
        conversations.append_message_and_touch(
            client, conversation_id, OWNER, next(messages), LIFETIMES
        )

    with recorded_writes() as warm_up:
        append()
    before = _command_calls(r)
    with recorded_writes() as writes:
        for _ in range(P6_APPENDS):
            append()
    after = _command_calls(r)
    client.close()
    return RoundTrips(
        appends=P6_APPENDS,
        writes=len(writes),
        warm_up=warm_up,
        server_calls={
            name: calls - before.get(name, 0)
            for name, calls in after.items()
            if calls != before.get(name, 0) and name != "info"
        },
    )


P6_SENDS = 200
RUN_SETTINGS = RunSettings(
    max_events=2000,
    events_ttl_after_end=3600,
    heartbeat_seconds=2,
    stale_seconds=15,
    context_budget_tokens=100_000,
)


def round_trips_per_send(r: redis.Redis) -> int:
    """P6 for the send path: writes per message sent (``runs.start_run``: the message stored,
    every TTL refreshed, it counted, its reply's run started), each run ended between sends
    outside the count, as its writer would."""
    conversation_id = conversations.create_conversation(r, OWNER, LIFETIMES)
    messages = iter(realistic_messages(P6_SENDS + 1, seed=7))

    def send() -> runs.Run:
        return runs.start_run(
            r, conversation_id, OWNER, LIFETIMES, RUN_SETTINGS, user_message=next(messages)
        )

    runs.finish_run(r, send(), runs.DONE, LIFETIMES, RUN_SETTINGS)  # scripts loaded
    counted = 0
    for _ in range(P6_SENDS):
        with recorded_writes() as writes:
            run = send()
        counted += len(writes)
        runs.finish_run(r, run, runs.DONE, LIFETIMES, RUN_SETTINGS)
    return counted
