"""What the admin console lists: every conversation with its state, owner, size and
lifetimes, page by page, and the counts of conversations by state.

Pages walk Redis with SCAN (never KEYS) and read in pipelines, so a page of the console
costs a bounded number of round trips however many conversations there are. Functions take
their Redis client as an argument and know nothing of HTTP.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import redis

from webapp import accounts, deadlines, lifecycle, owners
from webapp.lifecycle import ACTIVE, EXPIRED, PARKED
from webapp.llm import USAGE_FIELDS
from webapp.storage import keys
from webapp.storage.scan import scan_page

STATES = (ACTIVE, PARKED, EXPIRED)
"""Conversation states the console shows, in order."""

GUESTS = owners.GUEST
"""The owner filter that matches every guest."""

MAX_SCANS_PER_PAGE = 20
"""A page stops after this many SCAN calls even if it has found fewer rows than it holds
(a filter that matches little); its "next page" link carries on from there."""
SCAN_GROWTH_LIMIT = 20
"""One SCAN call of a page looks at no more than this many keys per row the page holds."""
SCAN_BATCH = 1000
"""Keys examined per SCAN call when walking everything (overview counts, bulk clearing)."""


class UnknownOwner(LookupError):
    """The owner asked for is no account's username, and not a guest."""


def resolve_owner(r: redis.Redis, text: str) -> str | None:
    """The owner filter a console user typed: None (everyone) for "", GUESTS for "guest", a
    well-formed owner string as is (see owners.parse), else the owner of that username.
    Raises UnknownOwner."""
    text = text.strip()
    if not text:
        return None
    if text.lower() == GUESTS:
        return GUESTS
    if owners.parse(text):
        return text
    user = accounts.find_user(r, text)
    if user is None:
        raise UnknownOwner(text)
    return user.owner


def _owner_matches(owner: str, wanted: str | None) -> bool:
    if wanted is None:
        return True
    if wanted == GUESTS:
        return owners.is_guest(owner)
    return owner == wanted


@dataclass(frozen=True)
class ConversationRow:
    """One conversation as the console lists it."""

    id: str
    owner: str
    owner_name: str
    state: str
    title: str
    message_count: int
    tokens: int
    """The tokens the model was billed for in it, every kind added up (input, cache
    writes and reads, output)."""
    size_bytes: int
    """MEMORY USAGE of its keys, summed (see _conversation_keys_with_run for which)."""
    created_at: float
    updated_at: float
    session_ttl: int | None
    """Seconds the session has left; None when it is gone."""
    transcript_ttl: int | None
    """Seconds the transcript has left; None when it is gone, -1 if it has no TTL."""


@dataclass(frozen=True)
class Page:
    rows: list[ConversationRow]
    next_cursor: int | None
    """The SCAN cursor to carry on from; None after the last page."""


def _ttl(value: int) -> int | None:
    return None if value == -2 else value


class Facts(NamedTuple):
    """What a row and its state are made from, read for many conversations at once."""

    meta: dict
    session_ttl: int | None
    transcript_ttl: int | None
    run_id: str | None
    parked_until: float

    @property
    def state(self) -> str:
        return lifecycle.state(
            transcript=True, session=self.session_ttl is not None, parked_until=self.parked_until
        )


FACT_READS = 5


def _queue_facts(pipe, conversation_id: str) -> None:
    """Queue the FACT_READS reads of one conversation's Facts."""
    pipe.hgetall(keys.conversation_meta(conversation_id))
    pipe.ttl(keys.conversation_session(conversation_id))
    pipe.ttl(keys.conversation_meta(conversation_id))
    pipe.hget(keys.conversation_run(conversation_id), "id")
    pipe.hget(keys.conversation_session(conversation_id), "parked_until")


def _read_facts(r: redis.Redis, ids: list[str]) -> dict[str, Facts]:
    """The Facts of each conversation that still exists, in one round trip."""
    pipe = r.pipeline(transaction=False)
    for conversation_id in ids:
        _queue_facts(pipe, conversation_id)
    answers = pipe.execute()
    facts = {}
    for number, conversation_id in enumerate(ids):
        meta, session_ttl, transcript_ttl, run_id, parked_until = answers[
            FACT_READS * number : FACT_READS * (number + 1)
        ]
        if meta:
            facts[conversation_id] = Facts(
                meta, _ttl(session_ttl), _ttl(transcript_ttl), run_id, float(parked_until or 0)
            )
    return facts


def _conversation_keys_with_run(conversation_id: str, run_id: str | None) -> list[str]:
    """The conversation's keys, and its latest run's events (older runs' events, kept a
    short while after they end, are left out of its size)."""
    known = list(keys.conversation_keys(conversation_id))
    if run_id:
        known.append(keys.run_events(conversation_id, run_id))
    return known


def _rows(r: redis.Redis, facts: dict[str, Facts]) -> list[ConversationRow]:
    """Rows for conversations whose facts were read: sizes and usernames in one round trip."""
    pipe = r.pipeline(transaction=False)
    sizes_queued = []
    for conversation_id, its_facts in facts.items():
        known = _conversation_keys_with_run(conversation_id, its_facts.run_id)
        for key in known:
            pipe.memory_usage(key)
        sizes_queued.append(len(known))
    user_ids = sorted(
        {user_id for f in facts.values() if (user_id := owners.user_id(f.meta["owner"]))}
    )
    for user_id in user_ids:
        # The profile's username, read here rather than by accounts.get_user once per
        # owner, so that a page costs one round trip whatever its owners.
        pipe.hget(keys.user_profile(user_id), "username")
    answers = pipe.execute()
    usernames = {
        user_id: name
        for user_id, name in zip(user_ids, answers[sum(sizes_queued) :], strict=True)
        if name
    }
    rows, position = [], 0
    for (conversation_id, its_facts), queued in zip(facts.items(), sizes_queued, strict=True):
        size = sum(used or 0 for used in answers[position : position + queued])
        position += queued
        meta = its_facts.meta
        rows.append(
            ConversationRow(
                id=conversation_id,
                owner=meta["owner"],
                owner_name=owners.label(
                    meta["owner"], usernames.get(owners.user_id(meta["owner"]) or "")
                ),
                state=its_facts.state,
                title=meta.get("title", ""),
                message_count=int(meta.get("message_count", 0)),
                tokens=sum(int(meta.get(field, 0)) for field in USAGE_FIELDS),
                size_bytes=size,
                created_at=float(meta["created_at"]),
                updated_at=float(meta["updated_at"]),
                session_ttl=its_facts.session_ttl,
                transcript_ttl=its_facts.transcript_ttl,
            )
        )
    return rows


def list_conversations(
    r: redis.Redis,
    cursor: int = 0,
    page_size: int = 50,
    state: str | None = None,
    owner: str | None = None,
) -> Page:
    """One page of every conversation, from SCAN ``cursor`` (0: the first page), keeping
    those in ``state`` and of ``owner`` (an owner string, GUESTS, or None for any).

    Each SCAN call's finds are read in one pipeline (and filtered); the page's rows then get
    their sizes in one more. A page may hold a few more rows than ``page_size`` (SCAN
    answers in whole buckets), or fewer when a filter matches little (it stops after
    MAX_SCANS_PER_PAGE calls; its "next page" carries on from there). One owner's
    conversations are read from its index instead (see _list_owners_conversations).
    """
    if owner is not None and owner != GUESTS:
        return _list_owners_conversations(r, owner, cursor, page_size, state)
    kept: dict[str, Facts] = {}
    scans = examined = count = 0
    while len(kept) < page_size and scans < MAX_SCANS_PER_PAGE:
        # SCAN's COUNT is how many keys it looks at, most of them not meta hashes (or not
        # matching the filter): ask for as many as the share of kept rows so far suggests,
        # at most twice as many as the call before, since that share is a rough guess.
        share = max(len(kept) / examined, 0.001) if examined else 1
        count = min(round((page_size - len(kept)) / share), 2 * count or page_size)
        count = max(1, min(count, SCAN_GROWTH_LIMIT * page_size))
        cursor, found = scan_page(
            r, cursor, match=keys.CONVERSATION_META_PATTERN, count=count, _type="hash"
        )
        scans, examined = scans + 1, examined + count
        ids = [cid for key in dict.fromkeys(found) if (cid := keys.conversation_id_of(key))]
        for conversation_id, facts in _read_facts(r, ids).items() if ids else ():
            if _owner_matches(facts.meta["owner"], owner) and state in (None, facts.state):
                kept[conversation_id] = facts
        if cursor == 0:
            break
    return Page(rows=_rows(r, kept), next_cursor=cursor or None)


def _list_owners_conversations(
    r: redis.Redis, owner: str, offset: int, page_size: int, state: str | None
) -> Page:
    """One page of ``owner``'s conversations, newest activity first, read from its index
    from ``offset`` (the page's cursor): what the page shows costs what one owner has, not
    what the whole database holds. Entries whose conversation is gone, or no longer the
    owner's, are skipped (the sweep removes them)."""
    index, kept = keys.owner_conversations(owner), {}
    while len(kept) < page_size:
        ids = r.zrevrange(index, offset, offset + page_size - 1)
        offset += len(ids)
        for conversation_id, facts in _read_facts(r, ids).items() if ids else ():
            if facts.meta["owner"] == owner and state in (None, facts.state):
                kept[conversation_id] = facts
        if len(ids) < page_size:
            offset = 0  # the end of the index
            break
    return Page(rows=_rows(r, kept), next_cursor=offset or None)


def conversation_row(r: redis.Redis, conversation_id: str) -> ConversationRow | None:
    """One conversation as the console lists it, or None if it is gone."""
    facts = _read_facts(r, [conversation_id])
    return _rows(r, facts)[0] if facts else None


def walk_conversations(r: redis.Redis) -> Iterator[tuple[str, str, str]]:
    """(id, owner, state) of every conversation, SCAN batch by SCAN batch, each batch read
    in one pipeline."""
    cursor = 0
    while True:
        cursor, found = scan_page(
            r, cursor, match=keys.CONVERSATION_META_PATTERN, count=SCAN_BATCH, _type="hash"
        )
        ids = [keys.conversation_id_of(key) for key in found]
        pipe = r.pipeline(transaction=False)
        for conversation_id in ids:
            pipe.hget(keys.conversation_meta(conversation_id), "owner")
            pipe.exists(keys.conversation_session(conversation_id))
            pipe.hget(keys.conversation_session(conversation_id), "parked_until")
        answers = pipe.execute() if ids else []
        for number, conversation_id in enumerate(ids):
            owner, has_session, parked_until = answers[3 * number : 3 * number + 3]
            if owner is not None:  # not gone since the SCAN
                state = lifecycle.state(
                    transcript=True,
                    session=bool(has_session),
                    parked_until=float(parked_until or 0),
                )
                yield conversation_id, owner, state
        if cursor == 0:
            return


def count_states(r: redis.Redis) -> dict[str, int]:
    """Conversations by state, from the deadline mirrors: one round trip, whatever their
    number (see deadlines). The rule of lifecycle.state, counted: a live session is
    active unless parked; a transcript without one is expired."""
    live = deadlines.count_live(r)
    parked = min(live.parked, live.sessions)
    return {
        ACTIVE: live.sessions - parked,
        PARKED: parked,
        EXPIRED: max(0, live.conversations - live.sessions),
    }


def describe_owner(r: redis.Redis, owner: str) -> str:
    """An owner's name for the console and the audit log."""
    user_id = owners.user_id(owner)
    user = accounts.get_user(r, user_id) if user_id else None
    return owners.label(owner, user.username if user else None)
