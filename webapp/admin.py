"""The admin console's domain: every conversation with its state, owner, size and lifetimes;
clearing one conversation, all of an owner's, or all expired ones; signing a user out
everywhere; the audit log of those actions; and the overview counts.

Everything walks Redis with SCAN (never KEYS) and reads in pipelines, so a page of the
console costs a bounded number of round trips however many conversations there are.
Functions take their Redis client as an argument and know nothing of HTTP.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import redis

from webapp import accounts, metrics
from webapp.lifecycle import ACTIVE, EXPIRED, PARKED
from webapp.storage import keys
from webapp.storage.scan import scan_page, scan_tagged
from webapp.storage.scripts import DELETE_CONVERSATION, execute_pipeline

STATES = (ACTIVE, PARKED, EXPIRED)
"""Conversation states the console shows, in order."""

GUESTS = "guest"
"""The owner filter that matches every guest."""

MAX_SCANS_PER_PAGE = 20
"""A page stops after this many SCAN calls even if it has found fewer rows than it holds
(a filter that matches little); its "next page" link carries on from there."""
SCAN_GROWTH_LIMIT = 20
"""One SCAN call of a page looks at no more than this many keys per row the page holds."""
SCAN_BATCH = 1000
"""Keys examined per SCAN call when walking everything (overview counts, bulk clearing)."""
CLEAR_BATCH = 100
"""Conversations cleared per pipeline."""
AUDIT_LOG_MAX = 10_000
"""The audit log keeps about this many newest entries."""
AUDIT_SHOWN = 50


class UnknownOwner(LookupError):
    """The owner asked for is no account's username, and not a guest."""


def conversation_state(*, has_session: bool, parked_until: float = 0) -> str:
    """The state of a conversation whose transcript exists, as lifecycle.state_of tells it
    from the facts a pipeline reads: parked while its session is frozen under a resume code,
    active while its session lives, expired once it is gone."""
    if not has_session:
        return EXPIRED
    return PARKED if parked_until > time.time() else ACTIVE


def owner_label(owner: str, usernames: dict[str, str]) -> str:
    """How the console names an owner: the account's username (from ``usernames``, by user
    id), or "guest" and the start of the guest's id."""
    kind, _, ident = owner.partition(":")
    if kind == "user":
        return usernames.get(ident) or f"deleted account {ident[:6]}"
    if kind == "guest":
        return f"guest {ident[:6]}"
    return owner


def resolve_owner(r: redis.Redis, text: str) -> str | None:
    """The owner filter a console user typed: None (everyone) for "", GUESTS for "guest", an
    owner string as is ("guest:<id>", "user:<id>"), else the owner of that username.
    Raises UnknownOwner."""
    text = text.strip()
    if not text:
        return None
    if text.lower() == GUESTS:
        return GUESTS
    if text.startswith(("guest:", "user:")):
        return text
    user = accounts.find_user(r, text)
    if user is None:
        raise UnknownOwner(text)
    return user.owner


def _owner_matches(owner: str, wanted: str | None) -> bool:
    if wanted is None:
        return True
    if wanted == GUESTS:
        return owner.startswith("guest:")
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
        return conversation_state(
            has_session=self.session_ttl is not None, parked_until=self.parked_until
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
    """The conversation's keys whose names are known without a SCAN: its meta, messages,
    session, recent ids, draft and run hash, and its latest run's events (older runs'
    events, kept a short while after they end, are only found by SCAN)."""
    known = [
        *keys.conversation_keys(conversation_id),
        keys.conversation_draft(conversation_id),
        keys.conversation_run(conversation_id),
    ]
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
        {f.meta["owner"].partition(":")[2] for f in facts.values() if _is_user(f.meta)}
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
                owner_name=owner_label(meta["owner"], usernames),
                state=its_facts.state,
                title=meta.get("title", ""),
                message_count=int(meta.get("message_count", 0)),
                size_bytes=size,
                created_at=float(meta["created_at"]),
                updated_at=float(meta["updated_at"]),
                session_ttl=its_facts.session_ttl,
                transcript_ttl=its_facts.transcript_ttl,
            )
        )
    return rows


def _is_user(meta: dict) -> bool:
    return meta.get("owner", "").startswith("user:")


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
    MAX_SCANS_PER_PAGE calls; its "next page" carries on from there).
    """
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


def conversation_row(r: redis.Redis, conversation_id: str) -> ConversationRow | None:
    """One conversation as the console lists it, or None if it is gone."""
    facts = _read_facts(r, [conversation_id])
    return _rows(r, facts)[0] if facts else None


def _walk_conversations(r: redis.Redis) -> Iterator[tuple[str, str, str]]:
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
                state = conversation_state(
                    has_session=bool(has_session), parked_until=float(parked_until or 0)
                )
                yield conversation_id, owner, state
        if cursor == 0:
            return


@dataclass(frozen=True)
class StateCounts:
    by_state: dict[str, int]
    counted_at: float


def count_states(r: redis.Redis, cache_seconds: int) -> StateCounts:
    """Conversations by state: counted over everything (in batches), then cached in Redis
    for ``cache_seconds`` so the console and /metrics stay fast."""
    cached = r.get(keys.ADMIN_OVERVIEW)
    if cached:
        stored = json.loads(cached)
        return StateCounts(stored["by_state"], stored["counted_at"])
    by_state = dict.fromkeys(STATES, 0)
    for _id, _owner, state in _walk_conversations(r):
        by_state[state] += 1
    counts = StateCounts(by_state, time.time())
    if cache_seconds > 0:
        stored = {"by_state": counts.by_state, "counted_at": counts.counted_at}
        r.set(keys.ADMIN_OVERVIEW, json.dumps(stored), ex=cache_seconds)
    return counts


@dataclass(frozen=True)
class Cleared:
    conversations: int
    keys: int


def _keys_by_conversation(r: redis.Redis, ids: set[str]) -> dict[str, set[str]]:
    """Every key of each conversation in ``ids``, run events included: one SCAN pass over
    the conversation keys (of one conversation only, on its master only, when there is
    one)."""
    if len(ids) == 1:
        (only,) = ids
        walk = scan_tagged(
            r, keys.conversation_keys_pattern(only), keys.conversation_meta(only), SCAN_BATCH
        )
    else:
        walk = r.scan_iter(match=keys.CONVERSATION_KEYS_PATTERN, count=SCAN_BATCH)
    found: dict[str, set[str]] = {conversation_id: set() for conversation_id in ids}
    for key in walk:
        conversation_id = keys.conversation_id_of(key)
        if conversation_id in found:
            found[conversation_id].add(key)
    return found


def _codes_by_conversation(r: redis.Redis, ids: set[str]) -> dict[str, list[str]]:
    """The resume code keys of each conversation in ``ids`` (the current code, and an
    expired one kept to tell a late entry so): one SCAN pass over the codes."""
    found: dict[str, list[str]] = {}
    cursor = 0
    while True:
        cursor, code_keys = scan_page(
            r, cursor, match=keys.RESUME_CODES_PATTERN, count=SCAN_BATCH, _type="hash"
        )
        pipe = r.pipeline(transaction=False)
        for key in code_keys:
            pipe.hget(key, "conversation_id")
        for key, conversation_id in zip(
            code_keys, pipe.execute() if code_keys else [], strict=True
        ):
            if conversation_id in ids:
                found.setdefault(conversation_id, []).append(key)
        if cursor == 0:
            return found


def _forget_references(pipe, conversation_id: str, owner: str, running: list[str]) -> None:
    """Queue the removal of what points at a cleared conversation from outside its hash
    tag (its resume codes aside): its entry in its owner's index, and its runs in the index
    of running runs."""
    if owner:
        pipe.zrem(keys.owner_conversations(owner), conversation_id)
    if running:
        pipe.zrem(keys.RUNS_RUNNING, *running)


def delete_conversations(
    r: redis.Redis, owners: dict[str, str], *, only_owner: str = "", only_expired: bool = False
) -> Cleared:
    """Delete every key of each conversation in ``owners`` (id -> owner) and what points at
    it, each conversation at once; with ``only_owner`` or ``only_expired``, only those still
    so at that moment."""
    if not owners:
        return Cleared(0, 0)
    found = _keys_by_conversation(r, set(owners))
    codes = _codes_by_conversation(r, set(owners))
    running: dict[str, list[str]] = {}
    for member in r.zrange(keys.RUNS_RUNNING, 0, -1):
        running.setdefault(member.partition(" ")[0], []).append(member)
    ids = list(owners)
    conversations = deleted = 0
    for start in range(0, len(ids), CLEAR_BATCH):
        batch = ids[start : start + CLEAR_BATCH]
        pipe = r.pipeline(transaction=False)
        for conversation_id in batch:
            pipe.hget(keys.conversation_run(conversation_id), "id")
        latest_runs = pipe.execute()  # a run started since the SCAN has events it missed

        def queue(pipe, batch=batch, latest_runs=latest_runs):
            for conversation_id, run_id in zip(batch, latest_runs, strict=True):
                meta = keys.conversation_meta(conversation_id)
                session = keys.conversation_session(conversation_id)
                others = (
                    found[conversation_id]
                    | set(_conversation_keys_with_run(conversation_id, run_id))
                ) - {meta, session}
                DELETE_CONVERSATION.queue(
                    pipe,
                    [meta, session, *sorted(others)],
                    [only_owner, EXPIRED if only_expired else ""],
                )

        cleared = [
            (conversation_id, result)
            for conversation_id, result in zip(batch, execute_pipeline(r, queue), strict=True)
            if result >= 0  # else refused: it changed hands, or its user came back
        ]
        conversations += sum(1 for _, result in cleared if result)
        deleted += sum(result for _, result in cleared)
        pipe = r.pipeline(transaction=False)
        code_keys = [key for cid, _ in cleared for key in codes.get(cid, [])]
        for code_key in code_keys:  # one DEL each: every code has a hash tag of its own
            pipe.delete(code_key)
        for conversation_id, _ in cleared:
            _forget_references(
                pipe, conversation_id, owners[conversation_id], running.get(conversation_id, [])
            )
        pipe.delete(keys.ADMIN_OVERVIEW)  # the counts changed
        deleted += sum(pipe.execute()[: len(code_keys)])
    return Cleared(conversations, deleted)


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: float
    admin: str
    action: str
    target: str
    conversations: int
    keys_deleted: int
    detail: str


def record(
    r: redis.Redis,
    admin: str,
    action: str,
    target: str,
    *,
    conversations: int = 0,
    keys_deleted: int = 0,
    detail: str = "",
) -> None:
    """Write one admin action to the audit log (capped at about AUDIT_LOG_MAX entries)."""
    r.xadd(
        keys.ADMIN_AUDIT,
        {
            "at": time.time(),
            "admin": admin,
            "action": action,
            "target": target,
            "conversations": conversations,
            "keys_deleted": keys_deleted,
            "detail": detail,
        },
        maxlen=AUDIT_LOG_MAX,
        approximate=True,
    )


def audit_entries(r: redis.Redis, count: int = AUDIT_SHOWN) -> list[AuditEntry]:
    """The newest ``count`` entries of the audit log, newest first."""
    return [
        AuditEntry(
            id=entry_id,
            at=float(fields["at"]),
            admin=fields["admin"],
            action=fields["action"],
            target=fields["target"],
            conversations=int(fields.get("conversations", 0)),
            keys_deleted=int(fields.get("keys_deleted", 0)),
            detail=fields.get("detail", ""),
        )
        for entry_id, fields in r.xrevrange(keys.ADMIN_AUDIT, count=count)
    ]


def describe_owner(r: redis.Redis, owner: str) -> str:
    """An owner's name for the console and the audit log."""
    kind, _, ident = owner.partition(":")
    user = accounts.get_user(r, ident) if kind == "user" else None
    return owner_label(owner, {ident: user.username} if user else {})


def clear_conversation(r: redis.Redis, conversation_id: str, admin: str) -> Cleared:
    """Delete every key of one conversation and what points at it; audited."""
    owner = r.hget(keys.conversation_meta(conversation_id), "owner") or ""
    cleared = delete_conversations(r, {conversation_id: owner})
    detail = f"owner {describe_owner(r, owner)}" if owner else "already gone"
    record(
        r,
        admin,
        "clear conversation",
        conversation_id,
        conversations=cleared.conversations,
        keys_deleted=cleared.keys,
        detail=detail,
    )
    return cleared


def clear_owner(r: redis.Redis, owner: str, admin: str) -> Cleared:
    """Delete every conversation of ``owner`` (all of them: found by SCAN, and through the
    owner's index); audited."""
    owners = dict.fromkeys(r.zrange(keys.owner_conversations(owner), 0, -1), owner)
    owners |= {cid: found for cid, found, _ in _walk_conversations(r) if found == owner}
    cleared = delete_conversations(r, owners, only_owner=owner)
    record(
        r,
        admin,
        "clear owner",
        describe_owner(r, owner),
        conversations=cleared.conversations,
        keys_deleted=cleared.keys,
        detail=owner,
    )
    return cleared


def clear_expired(r: redis.Redis, admin: str) -> Cleared:
    """Delete every expired conversation (transcript kept, session gone); one that becomes
    active meanwhile is kept. Audited."""
    owners = {cid: owner for cid, owner, state in _walk_conversations(r) if state == EXPIRED}
    cleared = delete_conversations(r, owners, only_expired=True)
    record(
        r,
        admin,
        "clear expired",
        "every expired conversation",
        conversations=cleared.conversations,
        keys_deleted=cleared.keys,
    )
    return cleared


def sign_out_everywhere(r: redis.Redis, user: accounts.User, admin: str) -> int:
    """End every login of ``user`` on every device; audited. Returns how many were live."""
    ended = accounts.sign_out_everywhere(r, user.id)
    record(
        r,
        admin,
        "sign out everywhere",
        user.username,
        detail=f"{ended} live login{'' if ended == 1 else 's'} ended",
    )
    return ended


@dataclass(frozen=True)
class Console:
    """Everything the console page shows."""

    page: Page
    state_counts: StateCounts
    resume_failures: list[metrics.HourCount]
    audit: list[AuditEntry]


def read_console(
    r: redis.Redis,
    *,
    cursor: int,
    page_size: int,
    state: str | None,
    owner: str | None,
    cache_seconds: int,
) -> Console:
    """The console's page of conversations, the overview, and the latest audit entries."""
    return Console(
        page=list_conversations(r, cursor, page_size, state, owner),
        state_counts=count_states(r, cache_seconds),
        resume_failures=metrics.resume_failures_by_hour(r),
        audit=audit_entries(r),
    )
