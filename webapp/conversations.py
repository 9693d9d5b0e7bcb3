"""Conversations: messages stored in Redis, with the session and transcript lifetimes.

Functions take their Redis client (and provider) as arguments and know nothing of HTTP.
"""

import functools
import json
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import redis

from webapp import deadlines, metrics
from webapp.storage import keys
from webapp.storage.scripts import (
    APPEND_MESSAGE_AND_TOUCH,
    CHANGE_OWNER,
    CONVERSATION_GONE,
    MIRROR_DEADLINES,
    SAVE_DRAFT,
    TOUCH_INDEXES,
    TOUCH_OWNER_INDEX,
    UPDATE_IF_EXISTS,
    AtomicScript,
    execute_pipeline,
    one_server,
    refusal,
)

DEDUPE_WINDOW = 128
"""A message whose id is among this many newest messages is not stored again.

Retries (a resent form, a replayed request after a dropped connection) arrive
right after the original, so a capped list of the newest ids catches them at a
constant cost per append and a constant size per conversation; an index of
every id would add about a tenth to the memory per message."""

MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
TITLE_CHARS = 80


@refusal(CONVERSATION_GONE)
class ConversationGone(LookupError):
    """The conversation does not exist (never did, expired, or was cleared)."""


class MessageRejected(ValueError):
    """The user's text cannot be stored; the message says why, for the page."""


@dataclass(frozen=True)
class Lifetimes:
    """How long a session and a transcript live, in seconds."""

    session_idle: int
    session_max: int
    transcript_retention: int


@dataclass(frozen=True)
class Message:
    id: str
    role: str
    content: str
    created_at: float
    status: str | None = None
    """None for a whole message; for a reply short of whole, how its run ended (stopped,
    interrupted, failed, cut_off, declined); for a note, what wrote it (model, extractive,
    browser)."""
    tokens: int | None = None
    """For a note: the summary's size in tokens."""
    replaced_tokens: int | None = None
    """For a note: the size in tokens of the history it stands for."""

    def to_json(self) -> str:
        """Compact JSON, as stored in the messages list; fields left at None are omitted."""
        present = {
            name: value for name in FIELD_NAMES if (value := getattr(self, name)) is not None
        }
        return _COMPACT_JSON.encode(present)

    @classmethod
    def from_json(cls, raw: str) -> "Message":
        return _parsed(raw)


FIELD_NAMES = tuple(field.name for field in fields(Message))
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""A message's fields, in the order its JSON holds them."""


# A message never changes once stored (a rewritten reply is stored as new JSON), and every
# page view reads its 50 again: a worker keeps the messages it parsed last (about twenty
# pages' worth).
@functools.lru_cache(maxsize=1024)
def _parsed(raw: str) -> Message:
    return Message(**json.loads(raw))


@dataclass(frozen=True)
class Conversation:
    id: str
    owner: str
    title: str
    message_count: int
    created_at: float
    updated_at: float
    seen_run: str | None = None
    """The latest run its owner has seen ended (the page showed it so)."""


def new_id() -> str:
    """An unguessable id (128 bits) for a conversation: whoever has it may ask for it, so
    its owner is checked too, but it is never guessed."""
    return secrets.token_urlsafe(16)


def new_message_id() -> str:
    """An id (96 bits) for a message, or a run and the reply it writes: unique among a
    conversation's messages by far, and no secret (the conversation's id and owner guard
    them). Stored with every message, so shorter than a conversation's."""
    return secrets.token_urlsafe(12)


def queue_indexes(
    pipe,
    owner: str,
    conversation_id: str,
    lifetimes: Lifetimes,
    write: str,
    *,
    script: tuple[AtomicScript, Sequence[str], Sequence] | None = None,
    activity: bool = True,
    parked_seconds: int = 0,
) -> None:
    """Queue a write to one of the owner's conversations and what keeps the indexes true
    after it, in one round trip: in the owner's index, the conversation's score becomes now
    (with ``activity``: the index lists by last activity), and the index lives at least the
    retention more seconds, as long as the longest-lived conversation it lists; the
    deadline mirrors follow ``write`` (see deadlines.write_arguments). Every write path that
    refreshes a conversation, or changes its session or owner, calls this.

    ``script`` is the write's own script call (a script made ``with_indexes``, its keys,
    its arguments), if it has one. Where one server holds every key, that script's form
    with_indexes makes the write and the indexes' step one command, which leaves the
    indexes alone when the write refused; with no script, TOUCH_INDEXES is that step. On a
    cluster, whose masters hold the conversation, the owner's index and the mirrors apart,
    the write, TOUCH_OWNER_INDEX and MIRROR_DEADLINES are three."""
    index = [keys.owner_conversations(owner)]
    index_args = [
        conversation_id,
        time.time() if activity else "",
        max(lifetimes.transcript_retention, parked_seconds),
    ]
    mirror_args = deadlines.write_arguments(
        conversation_id, owner, write, lifetimes, parked_seconds
    )
    if not one_server(pipe):
        if script:
            written, script_keys, script_args = script
            written.queue(pipe, script_keys, script_args)
        TOUCH_OWNER_INDEX.queue(pipe, index, index_args)
        MIRROR_DEADLINES.queue(pipe, keys.DEADLINES, mirror_args)
    elif script:
        written, script_keys, script_args = script
        written.with_indexes.queue(
            pipe,
            [*script_keys, *index, *keys.DEADLINES],
            [*script_args, *index_args, *mirror_args],
        )
    else:
        TOUCH_INDEXES.queue(pipe, [*index, *keys.DEADLINES], [*index_args, *mirror_args])


def outside_text_problem(content: str, max_chars: int) -> str | None:
    """Why ``content``, text that came from outside (a browser's copy, an imported file),
    can't be a message; None if it can."""
    if not content.strip() or len(content) > max_chars:
        return "a message is empty or too long"
    try:
        content.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no text at all
        return "a message is not text"
    return None


def make_title(text: str) -> str:
    """The first user message, on one line and shortened."""
    # Its first TITLE_CHARS words already make a title too long when there are more.
    line = " ".join(text.split(maxsplit=TITLE_CHARS)[:TITLE_CHARS])
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def validate_user_text(text: str, max_chars: int) -> str:
    """The text to store, or MessageRejected with a reason a user can act on."""
    text = text.strip()
    if not text:
        raise MessageRejected("Type a message before sending.")
    if len(text) > max_chars:
        raise MessageRejected(
            f"That message is {len(text):,} characters long; the limit is {max_chars:,}. "
            "Shorten it or split it into parts."
        )
    return text


def create_conversation(
    r: redis.Redis, owner: str, lifetimes: Lifetimes, conversation_id: str | None = None
) -> str:
    """Create an empty conversation for ``owner``, with its session begun, and list it in
    the owner's index; its id (``conversation_id``, as a quota reserved it, or a new one)."""
    conversation_id = conversation_id or new_id()
    now = time.time()
    meta = keys.conversation_meta(conversation_id)
    session = keys.conversation_session(conversation_id)
    session_ttl = min(lifetimes.session_idle, lifetimes.session_max)

    def queue(pipe):
        pipe.hset(meta, mapping={"owner": owner, "created_at": now, "updated_at": now})
        pipe.expire(meta, lifetimes.transcript_retention)
        pipe.hset(
            session,
            mapping={
                "started_at": int(now),
                "expires_at": int(now) + session_ttl,
                "context_from": 0,
            },
        )
        pipe.expire(session, session_ttl)
        queue_indexes(pipe, owner, conversation_id, lifetimes, deadlines.NEW)

    execute_pipeline(r, queue)
    return conversation_id


def append_message_and_touch(
    r: redis.Redis,
    conversation_id: str,
    owner: str,
    message: Message,
    lifetimes: Lifetimes,
    title: str | None = None,
) -> bool:
    """Append ``message`` once and slide every TTL of the conversation, in one round trip
    (with Sentinel, once a replica has it too: see storage.replicas_to_confirm). The
    conversation's title, if it has none yet, becomes ``title`` (by default, the text of a
    user's message).

    Returns False when a message with the same id was already stored.
    """
    if not MESSAGE_ID.match(message.id):
        raise ValueError(f"malformed message id {message.id!r}")
    if title is None:
        title = message.content if message.role == "user" else ""
    title = make_title(title) if title else ""

    def queue(pipe):
        append = [
            message.id,
            message.to_json(),
            title,
            lifetimes.session_idle,
            lifetimes.session_max,
            lifetimes.transcript_retention,
            DEDUPE_WINDOW,
        ]
        queue_indexes(
            pipe,
            owner,
            conversation_id,
            lifetimes,
            deadlines.SLID,
            script=(APPEND_MESSAGE_AND_TOUCH, keys.conversation_keys(conversation_id), append),
        )

    stored, *_ = execute_pipeline(r, queue, replicated=True)
    return bool(stored)


def get_conversation(r: redis.Redis, conversation_id: str) -> Conversation | None:
    """The conversation's summary fields, or None if it is gone."""
    return conversation_of(conversation_id, r.hgetall(keys.conversation_meta(conversation_id)))


def queue_get_conversation(pipe, conversation_id: str) -> None:
    """Queue get_conversation's read, whose answer goes to ``conversation_of``."""
    pipe.hgetall(keys.conversation_meta(conversation_id))


def conversation_of(conversation_id: str, meta: dict) -> Conversation | None:
    """The conversation whose meta hash ``meta`` is; None if it is gone (empty)."""
    return _conversation(conversation_id, meta) if meta else None


def _conversation(conversation_id: str, meta: dict) -> Conversation:
    return Conversation(
        id=conversation_id,
        owner=meta["owner"],
        title=meta.get("title", ""),
        message_count=int(meta.get("message_count", 0)),
        created_at=float(meta["created_at"]),
        updated_at=float(meta["updated_at"]),
        seen_run=meta.get("seen_run"),
    )


def mark_seen(r: redis.Redis, conversation_id: str, run_id: str) -> None:
    """The owner has seen run ``run_id`` ended: its reply is no longer news in the list."""
    UPDATE_IF_EXISTS.run(r, [keys.conversation_meta(conversation_id)], ["seen_run", run_id])


def rename(r: redis.Redis, conversation_id: str, title: str) -> str:
    """Give the conversation a title of its owner's choosing (shortened to one line); the
    title kept. MessageRejected for a title with no text."""
    title = make_title(title)
    if not title:
        raise MessageRejected("Type a name for the conversation.")
    UPDATE_IF_EXISTS.run(r, [keys.conversation_meta(conversation_id)], ["title", title])
    return title


def read_messages(r: redis.Redis, conversation_id: str, start: int = 0, stop: int = -1):
    """Messages ``start`` to ``stop`` (inclusive, LRANGE indices), oldest first."""
    raw = r.lrange(keys.conversation_messages(conversation_id), start, stop)
    return [Message.from_json(item) for item in raw]


def read_page(
    r: redis.Redis, conversation: Conversation, page_size: int, before: int | None = None
) -> tuple[int, list[Message]]:
    """The ``page_size`` messages before index ``before`` (default: the newest), with the
    index of the first one, in one round trip (see queue_page)."""
    pipe = r.pipeline(transaction=True)
    queue_page(pipe, conversation, page_size, before)
    return page_of(conversation, page_size, before, *pipe.execute())


def queue_page(pipe, conversation: Conversation, page_size: int, before: int | None) -> None:
    """Queue the read of a page (see read_page) in a transaction, maybe with other reads of
    the conversation: the message count and the page's messages, whose two answers go to
    ``page_of``. The newest page is read as it is now, with messages appended since
    ``conversation`` was read; an older one by ``conversation``'s message count."""
    messages = keys.conversation_messages(conversation.id)
    pipe.llen(messages)
    if before is None:
        pipe.lrange(messages, -page_size, -1)
        return
    start, end = _older_page(conversation, page_size, before)
    if end > start:
        pipe.lrange(messages, start, end - 1)
    else:
        pipe.lrange(messages, 1, 0)  # an empty range (its start past its stop): no messages


def page_of(
    conversation: Conversation, page_size: int, before: int | None, count: int, raw: list[str]
) -> tuple[int, list[Message]]:
    """The first index and the messages of the page queue_page read (``count``, ``raw``)."""
    if before is None:
        first_index = count - len(raw)
    else:
        first_index, _ = _older_page(conversation, page_size, before)
    return first_index, [Message.from_json(item) for item in raw]


def _older_page(conversation: Conversation, page_size: int, before: int) -> tuple[int, int]:
    """The indexes where the page before ``before`` starts and ends (exclusive)."""
    end = max(0, min(before, conversation.message_count))
    return max(0, end - page_size), end


def list_conversations(r: redis.Redis, owner: str, limit: int = 100) -> list[Conversation]:
    """The owner's conversations, most recently active first; entries of conversations that
    are gone, or that are no longer the owner's (an index update lost on a cluster), are
    skipped."""
    ids = r.zrevrange(keys.owner_conversations(owner), 0, limit - 1)
    pipe = r.pipeline(transaction=False)
    for conversation_id in ids:
        queue_get_conversation(pipe, conversation_id)
    found = (conversation_of(*read) for read in zip(ids, pipe.execute(), strict=True))
    return [conversation for conversation in found if conversation and conversation.owner == owner]


def move_conversations(r: redis.Redis, from_owner: str, to_owner: str) -> int:
    """Give every live conversation of ``from_owner`` to ``to_owner`` (a guest's, on logging
    in). Returns how many moved. Their resume codes are retired: a guest's code is a bearer
    key, and once the conversation is an account's, no other browser may redeem it.

    Only the entries moved leave the old index: a conversation the guest starts meanwhile
    (in another tab) stays listed as the guest's, never lost from both lists. The two
    indexes are under two owners' hash tags, so on a cluster no one script can hold both."""
    source, target = keys.owner_conversations(from_owner), keys.owner_conversations(to_owner)
    entries = r.zrange(source, 0, -1, withscores=True)

    def queue(pipe):
        for conversation_id, _ in entries:
            CHANGE_OWNER.queue(
                pipe, [keys.conversation_meta(conversation_id)], [from_owner, to_owner]
            )

    moved = execute_pipeline(r, queue) if entries else []
    kept = {cid: score for (cid, score), changed in zip(entries, moved, strict=True) if changed}
    if kept:
        retention = max(r.ttl(source), 1)
        pipe = r.pipeline(transaction=False)
        pipe.zadd(target, kept)
        pipe.expire(target, retention, gt=True)
        pipe.expire(target, retention, nx=True)
        pipe.zrem(source, *kept)
        for conversation_id in kept:
            pipe.smembers(keys.conversation_codes(conversation_id))
        code_hashes = [code for codes in pipe.execute()[-len(kept) :] for code in codes]
        retired_at = int(time.time())

        def retire(pipe):
            for code_hash in code_hashes:  # each under its own hash tag
                UPDATE_IF_EXISTS.queue(pipe, [keys.resume_code(code_hash)], ["used_at", retired_at])
            for conversation_id in kept:
                deadlines.queue_owner(pipe, conversation_id, to_owner)

        execute_pipeline(r, retire)
    return len(kept)


def save_draft(r: redis.Redis, conversation_id: str, text: str) -> bool:
    """Keep what is being typed (or forget it, given ""); False if the conversation is gone."""

    draft = [keys.conversation_meta(conversation_id), keys.conversation_draft(conversation_id)]
    return bool(SAVE_DRAFT.run(r, draft, [text]))


def queue_read_draft(pipe, conversation_id: str) -> None:
    """Queue the read of the conversation's draft, in another read's round trip (its answer
    is the draft, or None for none)."""
    pipe.get(keys.conversation_draft(conversation_id))


def fork_conversation(
    r: redis.Redis,
    conversation_id: str,
    owner: str,
    through: int,
    lifetimes: Lifetimes,
    fork_id: str | None = None,
) -> str:
    """A new conversation holding this one's messages up to index ``through``, with its own
    lifetimes; the original is untouched. Returns the new id (``fork_id``, as a quota
    reserved it, or a new one)."""
    copied = r.lrange(keys.conversation_messages(conversation_id), 0, through)
    original = get_conversation(r, conversation_id)
    if not copied or original is None:
        raise ConversationGone(conversation_id)
    fork_id = create_conversation(r, owner, lifetimes, fork_id)
    fill_conversation(
        r, fork_id, copied, f"{original.title} (fork)", lifetimes, forked_from=conversation_id
    )
    metrics.count_fork(r)
    return fork_id


def fill_conversation(
    r: redis.Redis,
    conversation_id: str,
    raw_messages: list[str],
    title: str,
    lifetimes: Lifetimes,
    *,
    forked_from: str | None = None,
) -> None:
    """Give a conversation just created its messages (as stored: JSON strings), its title
    and (for a fork) its origin, in one transaction; its context starts from its last note."""
    meta, messages, session, recent_ids, *_ = keys.conversation_keys(conversation_id)
    parsed = [Message.from_json(raw) for raw in raw_messages]
    notes = [index for index, message in enumerate(parsed) if message.role == "note"]
    pipe = r.pipeline(transaction=True)  # the conversation's keys share one hash slot
    pipe.rpush(messages, *raw_messages)
    pipe.lpush(recent_ids, *[message.id for message in parsed[-DEDUPE_WINDOW:]])
    pipe.hset(meta, mapping={"title": make_title(title), "message_count": len(raw_messages)})
    if forked_from:
        pipe.hset(meta, "forked_from", forked_from)
    pipe.hset(session, "context_from", notes[-1] if notes else 0)
    pipe.expire(messages, lifetimes.transcript_retention)
    pipe.expire(recent_ids, lifetimes.transcript_retention)
    pipe.execute()


def sweep_indexes(r: redis.Redis, batch: int = 500) -> int:
    """Remove index entries whose conversation is gone (SCAN, never KEYS). Returns how many."""
    removed = 0
    for index in r.scan_iter(match=keys.OWNER_CONVERSATIONS_PATTERN, count=batch, _type="zset"):
        removed += _sweep_index(r, index, batch)
    return removed


def _sweep_index(r: redis.Redis, index: str, batch: int) -> int:
    removed = 0
    cursor = 0
    while True:
        cursor, entries = r.zscan(index, cursor, count=batch)
        ids = [conversation_id for conversation_id, _score in entries]
        removed += _remove_missing(r, index, ids)
        if cursor == 0:
            return removed


def _remove_missing(r: redis.Redis, index: str, ids: Iterable[str]) -> int:
    ids = list(ids)
    if not ids:
        return 0
    pipe = r.pipeline(transaction=False)
    for conversation_id in ids:
        pipe.exists(keys.conversation_meta(conversation_id))
    missing = [cid for cid, exists in zip(ids, pipe.execute(), strict=True) if not exists]
    return r.zrem(index, *missing) if missing else 0
