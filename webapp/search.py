"""Search of one owner's conversations, titles and message text, for the owner alone.

A query is words; a message matches when every word begins a word of its text (a word of
one letter must be whole), and a conversation when its title does, or one of its messages.
Results are conversations, newest activity first, each with its newest matching messages.

Two ways to find the candidates, one way to choose among them (``_results``): where the
server has a search module (``FT.*``) and is not a cluster, an index of one document per
conversation (its owner, title and text, under the conversation's own hash tag) narrows
them down; it is brought up to date at each search, only for the conversations that
changed since they were indexed, and each document expires with its conversation. Anywhere
else, every message of the owner's conversations is read in one pipeline and looked at.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from redis.commands.search.field import NumericField, TagField, TextField
from redis.commands.search.index_definition import IndexDefinition, IndexType
from redis.commands.search.query import Query

from webapp.conversations import Message
from webapp.storage import keys

MAX_QUERY_CHARS = 200
MAX_WORDS = 8
CONVERSATIONS_SHOWN = 20
HITS_PER_CONVERSATION = 3
SNIPPET_CHARS = 160
"""About how much of a message a snippet shows around its first match."""

INDEX = f"{keys.PREFIX}:search"
"""The search module's index of the conversations' search documents."""
_INDEX_FILTER = (
    f"substr(@__key, strlen(@__key) - {len(keys.SEARCH_SUFFIX)}, {len(keys.SEARCH_SUFFIX)})"
    f' == "{keys.SEARCH_SUFFIX}"'
)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Part:
    """A piece of shown text, and whether it is a match (highlighted)."""

    text: str
    match: bool


@dataclass(frozen=True)
class Hit:
    message_id: str
    role: str
    created_at: float
    snippet: list[Part]
    before: int | None
    """The transcript page it is on (``?before=``), None for the newest page."""


@dataclass(frozen=True)
class Result:
    conversation_id: str
    title: list[Part]
    updated_at: float
    hits: list[Hit]


@dataclass(frozen=True)
class Found:
    results: list[Result]
    more: bool
    """More conversations match than are shown."""


def words_of(query: str) -> list[str]:
    """The words searched for, lower case, each once, in the order typed; a word that
    begins another is left out (a text with the longer one has it too), unless it has
    one letter (which must be whole)."""
    words = list(dict.fromkeys(_WORD.findall(query[:MAX_QUERY_CHARS].lower())))[:MAX_WORDS]
    return [
        word
        for word in words
        if len(word) == 1 or not any(other != word and other.startswith(word) for other in words)
    ]


def _pattern(words: list[str]) -> re.Pattern:
    """A whole word that begins with one of ``words`` (or is it, for a word of one letter)."""
    alternatives = "|".join(re.escape(w) + (r"\b" if len(w) == 1 else "") for w in words)
    return re.compile(r"\b(?:" + alternatives + r")\w*", re.IGNORECASE)


def _has_all(pattern: re.Pattern, words: list[str], text: str) -> bool:
    found = {token.lower() for token in pattern.findall(text)}
    return all(any(token.startswith(word) for token in found) for word in words)


def _parts(pattern: re.Pattern, text: str) -> list[Part]:
    parts, at = [], 0
    for found in pattern.finditer(text):
        if found.start() > at:
            parts.append(Part(text[at : found.start()], False))
        parts.append(Part(found.group(), True))
        at = found.end()
    if at < len(text):
        parts.append(Part(text[at:], False))
    return parts


def _snippet(pattern: re.Pattern, text: str) -> list[Part]:
    """About SNIPPET_CHARS of ``text`` around its first match, on one line."""
    first = pattern.search(text)
    start = max(0, first.start() - SNIPPET_CHARS // 3)
    end = min(len(text), start + SNIPPET_CHARS)
    shown = " ".join(text[start:end].split())
    return _parts(pattern, ("…" if start else "") + shown + ("…" if end < len(text) else ""))


def page_of(index: int, count: int, page_size: int) -> int | None:
    """The ``before`` of a transcript page that shows message ``index`` near its middle;
    None when that is the newest page."""
    before = index + 1 + page_size // 2
    return None if before >= count else before


@dataclass(frozen=True)
class _Conversation:
    id: str
    title: str
    updated_at: float
    messages: list[str]
    """As stored: JSON, oldest first."""


def _results(conversations: Iterable[_Conversation], words: list[str], page_size: int) -> Found:
    """The conversations that match, newest activity first, each with its newest hits."""
    pattern, matched = _pattern(words), []
    for conversation in sorted(conversations, key=lambda c: c.updated_at, reverse=True):
        hits = []
        for index in range(len(conversation.messages) - 1, -1, -1):
            raw = conversation.messages[index]
            lowered = raw.lower()
            if not all(word in lowered for word in words):
                continue  # cheap: the stored JSON holds the text as it is (no \u escapes)
            message = Message.from_json(raw)
            if not _has_all(pattern, words, message.content):
                continue
            hits.append(
                Hit(
                    message_id=message.id,
                    role=message.role,
                    created_at=message.created_at,
                    snippet=_snippet(pattern, message.content),
                    before=page_of(index, len(conversation.messages), page_size),
                )
            )
            if len(hits) == HITS_PER_CONVERSATION:
                break
        if hits or _has_all(pattern, words, conversation.title):
            matched.append(
                Result(
                    conversation.id,
                    _parts(pattern, conversation.title or "Untitled"),
                    conversation.updated_at,
                    hits,
                )
            )
            if len(matched) > CONVERSATIONS_SHOWN:
                break
    return Found(matched[:CONVERSATIONS_SHOWN], len(matched) > CONVERSATIONS_SHOWN)


def _read(r: redis.Redis, owner: str, ids: list[str]) -> list[_Conversation]:
    """The conversations among ``ids`` that are the owner's, with all their messages, in one
    pipeline."""
    pipe = r.pipeline(transaction=False)
    for conversation_id in ids:
        pipe.hmget(keys.conversation_meta(conversation_id), "owner", "title", "updated_at")
        pipe.lrange(keys.conversation_messages(conversation_id), 0, -1)
    answers = pipe.execute() if ids else []
    return [
        _Conversation(conversation_id, title or "", float(updated_at), messages)
        for conversation_id, (its_owner, title, updated_at), messages in zip(
            ids, answers[::2], answers[1::2], strict=True
        )
        if its_owner == owner
    ]


def search(r: redis.Redis, owner: str, query: str, page_size: int, use_index: bool) -> Found:
    """What of the owner's conversations matches ``query`` (nothing for no words)."""
    words = words_of(query)
    if not words:
        return Found([], False)
    ids = r.zrange(keys.owner_conversations(owner), 0, -1)
    if use_index:
        try:
            ids = _candidates(r, owner, ids, words)
        except redis.exceptions.ResponseError as error:
            if "no such index" not in str(error).lower():
                raise
            has_search_module(r)  # lost (FLUSHALL, a new server): made again, filling in
            # the background, so this one search reads every message
    return _results(_read(r, owner, ids), words, page_size)


# The search module's side.


def has_search_module(r: redis.Redis) -> bool:
    """Whether the server answers ``FT.*`` with full-text fields, its index made if missing."""
    try:
        r.ft(INDEX).info()
        return True
    except redis.exceptions.ResponseError as error:
        if "unknown command" in str(error).lower():
            return False
    try:
        r.ft(INDEX).create_index(
            [
                TagField("owner", case_sensitive=True),
                TextField("title"),
                TextField("body"),
                NumericField("updated_at", sortable=True),
            ],
            definition=IndexDefinition(
                prefix=[f"{keys.PREFIX}:conv:"],
                filter=_INDEX_FILTER,
                index_type=IndexType.HASH,
            ),
            stopwords=[],
            no_term_offsets=True,
            no_highlight=True,
        )
    except redis.exceptions.ResponseError as error:
        return "already exists" in str(error).lower()  # another process made it first
    return True


def _version(owner: str, title: str | None, updated_at: str, count: str | None) -> str:
    return f"{owner}\n{updated_at}\n{count or 0}\n{title or ''}"


def _candidates(r: redis.Redis, owner: str, ids: list[str], words: list[str]) -> list[str]:
    """The owner's conversations whose title and text together hold every word, by the
    index, once the documents of the conversations that changed are written anew."""
    pipe = r.pipeline(transaction=False)
    for conversation_id in ids:
        pipe.hmget(
            keys.conversation_meta(conversation_id),
            "owner", "title", "updated_at", "message_count",
        )  # fmt: skip
        pipe.pexpiretime(keys.conversation_meta(conversation_id))
        pipe.hget(keys.conversation_search(conversation_id), "version")
    answers = pipe.execute() if ids else []
    stale = {}
    for n, conversation_id in enumerate(ids):
        (its_owner, title, updated_at, count), expires_at, indexed = answers[3 * n : 3 * n + 3]
        if its_owner == owner and expires_at > 0:
            version = _version(owner, title, updated_at, count)
            if version != indexed:
                stale[conversation_id] = (title, updated_at, expires_at, version)
    if stale:
        _index(r, owner, stale)
    tag = re.sub(r"(\W)", r"\\\1", owner)
    terms = " ".join(word + ("*" if len(word) > 1 else "") for word in words)
    query = (
        Query(f"@owner:{{{tag}}} ({terms})")
        .no_content()
        .verbatim()
        .sort_by("updated_at", asc=False)
        .paging(0, 2 * CONVERSATIONS_SHOWN)
    )
    found = r.ft(INDEX).search(query)
    prefix = f"{keys.PREFIX}:conv:{{"
    return [doc.id[len(prefix) : doc.id.index("}")] for doc in found.docs]


def _index(r: redis.Redis, owner: str, stale: dict[str, tuple]) -> None:
    """Write the search documents of the ``stale`` conversations, each expiring when its
    conversation does, as read (never later: the conversation's lifetime only grows, and
    a document that expired first is written again by the next search)."""
    pipe = r.pipeline(transaction=False)
    for conversation_id in stale:
        pipe.lrange(keys.conversation_messages(conversation_id), 0, -1)
    bodies = pipe.execute()
    pipe = r.pipeline(transaction=False)
    for (conversation_id, (title, updated_at, expires_at, version)), messages in zip(
        stale.items(), bodies, strict=True
    ):
        document = keys.conversation_search(conversation_id)
        body = "\n".join(Message.from_json(raw).content for raw in messages)
        pipe.delete(document)
        pipe.hset(
            document,
            mapping={
                "owner": owner,
                "title": title or "",
                "body": body,
                "updated_at": updated_at,
                "version": version,
            },
        )
        pipe.pexpireat(document, expires_at)
    pipe.execute()
