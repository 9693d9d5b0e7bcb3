"""The list of an owner's conversations beside every chat page: newest activity first, in
groups by day, each with its state as the lifecycle defines it, and a mark for a reply that
finished while its owner was away."""

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from webapp import lifecycle, runs
from webapp.storage import keys

LISTED = 50
"""Conversations the list shows (the newest)."""
WRITING = "writing"
"""The state of a conversation whose reply is being written (beside lifecycle's)."""
GROUPS = ("Today", "Yesterday", "Previous 7 days", "Older")


@dataclass(frozen=True)
class Entry:
    id: str
    title: str
    updated_at: float
    message_count: int
    state: str
    """WRITING, or lifecycle's ACTIVE, PARKED or EXPIRED."""
    news: bool
    """Its latest reply ended since its owner last saw it."""


@dataclass(frozen=True)
class Group:
    name: str
    entries: list[Entry]


def group_of(updated_at: float, now: float) -> str:
    """The group of a conversation last active at ``updated_at``, by UTC day."""
    today = datetime.fromtimestamp(now, UTC).date()
    day = datetime.fromtimestamp(updated_at, UTC).date()
    if day >= today:
        return GROUPS[0]
    if day == today - timedelta(days=1):
        return GROUPS[1]
    return GROUPS[2] if day > today - timedelta(days=8) else GROUPS[3]


def read_sidebar(r: redis.Redis, owner: str) -> list[Group]:
    """The owner's newest LISTED conversations, grouped, in two round trips."""
    pipe = r.pipeline(transaction=False)
    queue_listed(pipe, owner)
    (listed,) = pipe.execute()
    return sidebar_of(r, owner, listed)


def queue_listed(pipe, owner: str) -> None:
    """Queue the first of read_sidebar's round trips (the ids it lists), for a page to send
    with a read of its own; its answer goes to ``sidebar_of``."""
    pipe.zrevrange(keys.owner_conversations(owner), 0, LISTED - 1)


def sidebar_of(r: redis.Redis, owner: str, ids: list[str]) -> list[Group]:
    """The groups of the conversations ``ids`` (read by queue_listed), in one round trip."""
    pipe = r.pipeline(transaction=False)
    for conversation_id in ids:
        pipe.hmget(
            keys.conversation_meta(conversation_id),
            *("owner", "title", "updated_at", "message_count", "seen_run"),
        )
        pipe.hmget(keys.conversation_session(conversation_id), "expires_at", "parked_until")
        pipe.hmget(keys.conversation_run(conversation_id), "id", "status")
    answers = pipe.execute() if ids else []
    now, groups = time.time(), {name: [] for name in GROUPS}
    for number, conversation_id in enumerate(ids):
        meta, session, run = answers[3 * number : 3 * number + 3]
        its_owner, title, updated_at, message_count, seen_run = meta
        if its_owner != owner:
            continue  # gone, or no longer the owner's (the sweep removes the entry)
        expires_at, parked_until = session
        run_id, status = run
        state = lifecycle.state(
            transcript=True,
            session=expires_at is not None and float(expires_at) > now,
            parked_until=float(parked_until or 0),
        )
        entry = Entry(
            id=conversation_id,
            title=title or "Untitled",
            updated_at=float(updated_at),
            message_count=int(message_count or 0),
            state=WRITING if status == runs.RUNNING else state,
            news=status not in (None, runs.RUNNING) and run_id != seen_run,
        )
        groups[group_of(entry.updated_at, now)].append(entry)
    return [Group(name, entries) for name, entries in groups.items() if entries]
