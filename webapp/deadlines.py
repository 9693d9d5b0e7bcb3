"""Mirrors of when each conversation, session and parking ends, so that counting
conversations by state and sweeping what has ended cost what changes, not what is stored.

Redis expires a conversation's keys by their TTLs, which no one can list by time; so every
write that moves a deadline also writes it into a sorted set scored by that deadline, in
the same round trip (see MIRROR_DEADLINES and conversations.queue_indexes). Then:

- the counts by state come from three ZCOUNTs of the members whose deadline is still
  ahead (``count_live``), exact as the clock moves, with no sweep needed for them to drop;
- the sweep (``sweep``) reads only the members whose deadline has passed, checks each
  against the conversation's own keys, settles what ended (an expiry counted once, an
  index entry of a conversation gone removed) and corrects what the mirror had wrong;
- ``rebuild`` recounts from scratch with SCAN (O(N)): after an upgrade from data written
  before the mirrors, or on a cluster whose mirror master lost writes. An operator runs it
  (``resume-chat repair``), never a request.

The mirrors are under a hash tag of their own, so on a cluster they are a second step of
each write that can be lost (see ``scripts``): a lost mirror write makes a count wrong
until the sweep sees the member's deadline pass (it then reads the truth) or a repair.
"""

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import redis

from webapp.storage import keys
from webapp.storage.scan import scan_page
from webapp.storage.scripts import FORGET_DUE, MIRROR_DEADLINES, UPDATE_IF_EXISTS, execute_pipeline

NEW, KEPT, MOVED, SLID, RESTARTED, STARTED, PARKED_FOR = (
    "new",
    "kept",
    "moved",
    "slid",
    "restarted",
    "started",
    "parked",
)
"""What a write did to a conversation, as MIRROR_DEADLINES takes it (see there)."""

if TYPE_CHECKING:
    from webapp.conversations import Lifetimes

SWEEP_BATCH = 500
"""Members a sweep reads and settles per round trip."""


def write_arguments(
    conversation_id: str,
    owner: str,
    write: str,
    lifetimes: "Lifetimes",
    parked_seconds: int = 0,
) -> list:
    """The arguments of the mirror of one write (``write``: one of NEW ... PARKED_FOR) to a
    conversation, as MIRROR_DEADLINES (and TOUCH_INDEXES after the index's) takes them, to
    follow that write's own script in its round trip (see conversations.queue_indexes)."""
    return [
        conversation_id,
        owner,
        write,
        lifetimes.transcript_retention,
        lifetimes.session_idle,
        lifetimes.session_max,
        parked_seconds,
    ]


def queue_owner(pipe, conversation_id: str, owner: str) -> None:
    """Queue the mirror of a conversation given to ``owner`` (nothing else changed)."""
    MIRROR_DEADLINES.queue(pipe, keys.DEADLINES, [conversation_id, owner, MOVED, 0, 0, 0, 0])


def queue_forget(pipe, conversation_ids: list[str]) -> None:
    """Queue the removal of deleted conversations from every mirror."""
    *sorted_sets, owners = keys.DEADLINES_FORGOTTEN_TOGETHER
    for mirror in sorted_sets:
        pipe.zrem(mirror, *conversation_ids)
    pipe.hdel(owners, *conversation_ids)


class Live(NamedTuple):
    """How many conversations, sessions and parkings have not ended yet."""

    conversations: int
    sessions: int
    parked: int


def count_live(r: redis.Redis) -> Live:
    """The mirrors' members whose deadline is still ahead: three ZCOUNTs, one round trip."""
    ahead = f"({time.time()}"
    pipe = r.pipeline(transaction=False)
    for mirror in (keys.DEADLINES_CONVERSATIONS, keys.DEADLINES_SESSIONS, keys.DEADLINES_PARKED):
        pipe.zcount(mirror, ahead, "+inf")
    return Live(*pipe.execute())


@dataclass(frozen=True)
class Swept:
    sessions_ended: int
    """Sessions found ended, each counted once (the conversation is marked)."""
    conversations_gone: int
    """Conversations found gone, their owner's index entries removed."""


def sweep(r: redis.Redis, batch: int = SWEEP_BATCH) -> Swept:
    """Settle every deadline that has passed since the last sweep: its cost follows how many
    passed, not how many conversations there are."""
    r.zremrangebyscore(keys.DEADLINES_PARKED, "-inf", time.time())
    return Swept(_sweep_sessions(r, batch), _sweep_conversations(r, batch))


def _due(r: redis.Redis, mirror: str, batch: int) -> list[str]:
    return r.zrangebyscore(mirror, "-inf", time.time(), start=0, num=batch)


def _sweep_sessions(r: redis.Redis, batch: int) -> int:
    """Mark each conversation whose session ended, once; a session found alive (its mirror
    lagged) gets its true deadline back."""
    ended = 0
    while ids := _due(r, keys.DEADLINES_SESSIONS, batch):
        now = time.time()
        pipe = r.pipeline(transaction=False)
        for conversation_id in ids:
            pipe.hmget(keys.conversation_session(conversation_id), "expires_at", "parked_until")
            pipe.hexists(keys.conversation_meta(conversation_id), "session_ended")
        answers = pipe.execute()
        alive, parked, over, unmarked = {}, {}, [], []
        for conversation_id, (expires_at, parked_until), marked in zip(
            ids, answers[::2], answers[1::2], strict=True
        ):
            if expires_at is not None and float(expires_at) > now:
                alive[conversation_id] = float(expires_at)
                if float(parked_until or 0) > now:
                    parked[conversation_id] = float(parked_until)
            else:
                over.append(conversation_id)
                if not marked:
                    unmarked.append(conversation_id)

        def queue(pipe, alive=alive, parked=parked, over=over, unmarked=unmarked, now=now):
            if alive:
                pipe.zadd(keys.DEADLINES_SESSIONS, alive, xx=True, gt=True)
            if parked:
                pipe.zadd(keys.DEADLINES_PARKED, parked, gt=True)
            if over:
                FORGET_DUE.queue(
                    pipe, [keys.DEADLINES_SESSIONS, keys.DEADLINES_SESSION_CAPS], [now, "", *over]
                )
            for conversation_id in unmarked:
                UPDATE_IF_EXISTS.queue(
                    pipe, [keys.conversation_meta(conversation_id)], ["session_ended", 1]
                )

        answers = execute_pipeline(r, queue)
        ended += sum(answers[len(answers) - len(unmarked) :])
    return ended


def _sweep_conversations(r: redis.Redis, batch: int) -> int:
    """Forget each conversation that is gone and remove its owner's index entry; one found
    alive (its mirror lagged) gets its true deadline back."""
    gone = 0
    while ids := _due(r, keys.DEADLINES_CONVERSATIONS, batch):
        now = time.time()
        pipe = r.pipeline(transaction=False)
        for conversation_id in ids:
            pipe.pexpiretime(keys.conversation_meta(conversation_id))
        alive, missing = {}, []
        for conversation_id, ends_ms in zip(ids, pipe.execute(), strict=True):
            if ends_ms == -2 or 0 <= ends_ms <= now * 1000:
                missing.append(conversation_id)
            else:  # -1: kept without a TTL, for as long as it is there
                alive[conversation_id] = ends_ms / 1000 if ends_ms > 0 else float("inf")

        def queue(pipe, alive=alive, missing=missing, now=now):
            if alive:
                pipe.zadd(keys.DEADLINES_CONVERSATIONS, alive, xx=True, gt=True)
            if missing:
                FORGET_DUE.queue(pipe, keys.DEADLINES_FORGOTTEN_TOGETHER, [now, "hash", *missing])

        removed = execute_pipeline(r, queue)[-1] if missing else []
        owner_of = dict(zip(removed[::2], removed[1::2], strict=True))
        pipe = r.pipeline(transaction=False)
        for conversation_id, owner in owner_of.items():
            if owner:
                pipe.zrem(keys.owner_conversations(owner), conversation_id)
        pipe.execute()
        gone += len(owner_of)
    return gone


REBUILD_BATCH = 1000
"""Conversations a rebuild reads per round trip."""


def rebuild(r: redis.Redis, lifetimes: "Lifetimes") -> Live:
    """Mirror every conversation afresh from its own keys (SCAN, O(N)), and forget members
    whose conversation is gone. Deadlines are written as read: one that a write moves
    meanwhile may be written earlier than it is, which only brings the sweep to read its
    truth sooner. Returns what is live afterwards."""
    seen: set[str] = set()
    cursor = 0
    while True:
        cursor, found = scan_page(
            r, cursor, match=keys.CONVERSATION_META_PATTERN, count=REBUILD_BATCH, _type="hash"
        )
        ids = [keys.conversation_id_of(key) for key in found]
        seen.update(ids)
        if ids:
            _mirror_afresh(r, ids, lifetimes)
        if cursor == 0:
            break
    _forget_unseen(r, seen)
    return count_live(r)


def _mirror_afresh(r: redis.Redis, ids: list[str], lifetimes: "Lifetimes") -> None:
    pipe = r.pipeline(transaction=False)
    for conversation_id in ids:
        pipe.hget(keys.conversation_meta(conversation_id), "owner")
        pipe.pexpiretime(keys.conversation_meta(conversation_id))
        pipe.hmget(
            keys.conversation_session(conversation_id), "started_at", "expires_at", "parked_until"
        )
    answers = pipe.execute()
    now = time.time()
    sorted_sets = (
        keys.DEADLINES_CONVERSATIONS,
        keys.DEADLINES_SESSIONS,
        keys.DEADLINES_SESSION_CAPS,
        keys.DEADLINES_PARKED,
    )
    mirrors: dict[str, dict[str, float]] = {mirror: {} for mirror in sorted_sets}
    owners = {}
    for conversation_id, owner, ends_ms, (started_at, expires_at, parked_until) in zip(
        ids, answers[::3], answers[1::3], answers[2::3], strict=True
    ):
        if owner is None or ends_ms == -2:
            continue  # gone since the SCAN
        owners[conversation_id] = owner
        mirrors[keys.DEADLINES_CONVERSATIONS][conversation_id] = (
            ends_ms / 1000 if ends_ms > 0 else float("inf")
        )
        if expires_at is not None and float(expires_at) > now:
            mirrors[keys.DEADLINES_SESSIONS][conversation_id] = float(expires_at)
            mirrors[keys.DEADLINES_SESSION_CAPS][conversation_id] = (
                float(started_at or now) + lifetimes.session_max
            )
            if float(parked_until or 0) > now:
                mirrors[keys.DEADLINES_PARKED][conversation_id] = float(parked_until)
    pipe = r.pipeline(transaction=False)
    for mirror, scores in mirrors.items():
        if scores:
            pipe.zadd(mirror, scores)
    if owners:
        pipe.hset(keys.DEADLINES_OWNERS, mapping=owners)
    pipe.execute()


def _forget_unseen(r: redis.Redis, seen: set[str]) -> None:
    """Forget the members of the conversations mirror that the SCAN did not see and whose
    conversation is gone (one made during the SCAN is kept)."""
    cursor = 0
    while True:
        cursor, entries = r.zscan(keys.DEADLINES_CONVERSATIONS, cursor, count=REBUILD_BATCH)
        unseen = [member for member, _score in entries if member not in seen]
        if unseen:
            pipe = r.pipeline(transaction=False)
            for conversation_id in unseen:
                pipe.exists(keys.conversation_meta(conversation_id))
            gone = [cid for cid, exists in zip(unseen, pipe.execute(), strict=True) if not exists]
            if gone:
                execute_pipeline(r, lambda pipe, gone=gone: queue_forget(pipe, gone))
        if cursor == 0:
            return
