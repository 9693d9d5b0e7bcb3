"""Search of one owner's conversations, titles and message text, for the owner alone.

A query is words; a message matches when every word begins a word of its text (a word of
one letter must be whole), and a conversation when its title does, or one of its messages.
Results are conversations, newest activity first, each with its newest matching messages.

Two ways to find the candidates, one way to choose among them (``_results``): where the
server has a search module (``FT.*``) and is not a cluster, an index of one document per
conversation (its owner, title and text, under the conversation's own hash tag) narrows
them down; it is brought up to date at each search, only for the conversations that
changed since they were indexed, and each document expires with its conversation. Anywhere
else, every conversation of the owner's is looked at. Either way the server looks at the
candidates' messages (a script per conversation, in one pipeline a look) and sends back only
those that may match, which are then matched here; the newest are looked at first, and the
looks stop once more match than are shown.
"""

import re
from dataclasses import dataclass

import redis
from redis.commands.search.field import NumericField, TagField, TextField
from redis.commands.search.index_definition import IndexDefinition, IndexType
from redis.commands.search.query import Query

from webapp.conversations import Message
from webapp.storage import keys
from webapp.storage.scripts import FIND_MESSAGES, INDEX_FOR_SEARCH, execute_pipeline

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
    message_count: int
    found: list[tuple[int, str]]
    """The messages the server found may match, newest first: (index, JSON as stored)."""


LOOKED_AT = 10
"""The most messages of one conversation the server answers with, newest first: more than
HITS_PER_CONVERSATION, as some may not match after all (see ``_server_terms``)."""


def _server_terms(words: list[str]) -> list[str]:
    """What FIND_MESSAGES looks for, pairs of (part, how): a message that matches ``words``
    has all of them, and few others do. The server lower-cases ASCII letters only, so a
    word of ASCII must begin a word there (or be one, for a word of one letter), and of any
    other word only its ASCII parts must appear."""
    terms = []
    for word in words:
        ascii_parts = re.findall(r"[a-z0-9_]+", word)
        if ascii_parts == [word]:
            terms += [word, "whole" if len(word) == 1 else "start"]
        else:
            terms += [item for part in ascii_parts for item in (part, "anywhere")]
    return terms


def _find(r: redis.Redis, owner: str, ids: list[str], words: list[str]) -> list[_Conversation]:
    """The conversations among ``ids`` that are the owner's, each with the messages that may
    match, in one pipeline: the server looks (FIND_MESSAGES), one script per conversation."""
    terms = _server_terms(words)

    def queue(pipe):
        for conversation_id in ids:
            FIND_MESSAGES.queue(
                pipe,
                [
                    keys.conversation_meta(conversation_id),
                    keys.conversation_messages(conversation_id),
                ],
                [owner, LOOKED_AT, *terms],
            )

    answers = execute_pipeline(r, queue) if ids else []
    return [
        _Conversation(
            conversation_id,
            title,
            float(updated_at),
            int(count),
            list(zip(map(int, found[::2]), found[1::2], strict=True)),
        )
        for conversation_id, answer in zip(ids, answers, strict=True)
        if answer
        for title, updated_at, count, *found in [answer]
    ]


def _results(conversations: list[_Conversation], words: list[str], page_size: int) -> Found:
    """The conversations that match, newest activity first, each with its newest hits."""
    pattern, matched = _pattern(words), []
    for conversation in sorted(conversations, key=lambda c: c.updated_at, reverse=True):
        hits = []
        for index, raw in conversation.found:
            message = Message.from_json(raw)
            if not _has_all(pattern, words, message.content):
                continue
            hits.append(
                Hit(
                    message_id=message.id,
                    role=message.role,
                    created_at=message.created_at,
                    snippet=_snippet(pattern, message.content),
                    before=page_of(index, conversation.message_count, page_size),
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


def search(r: redis.Redis, owner: str, query: str, page_size: int, use_index: bool) -> Found:
    """What of the owner's conversations matches ``query`` (nothing for no words)."""
    words = words_of(query)
    if not words:
        return Found([], False)
    ids = r.zrange(keys.owner_conversations(owner), 0, -1)
    order = None
    # The module folds the case of ASCII letters only: a word beyond them is looked for in
    # every conversation.
    if use_index and all(word.isascii() for word in words):
        try:
            order = _candidates(r, owner, ids, words)
        except redis.exceptions.ResponseError as error:
            if "no such index" not in str(error).lower():
                raise
            has_search_module(r)  # lost (its data emptied, a new server): made again, filling in
            # the background, so this one search looks at every conversation
    if order is None:
        order = _newest_first(r, ids)
    return _newest_matches(r, owner, order, words, page_size)


FIRST_LOOK = 25
"""Conversations looked at first, the newest: each look after it takes twice as many."""


def _newest_matches(
    r: redis.Redis, owner: str, order: list[str], words: list[str], page_size: int
) -> Found:
    """The results among ``order``, conversations newest activity first (by ``updated_at``,
    as the results are ordered), looked at in that order in looks that double, until more
    than CONVERSATIONS_SHOWN match or none are left: an older one could not be shown before
    them, so a common word is settled by the newest few dozen, and a rare one reads all."""
    found, looked, size = [], 0, FIRST_LOOK
    while True:
        found += _find(r, owner, order[looked : looked + size], words)
        looked += size
        results = _results(found, words, page_size)
        if results.more or looked >= len(order):
            return results
        size *= 2


def _newest_first(r: redis.Redis, ids: list[str]) -> list[str]:
    """``ids`` by their conversations' last activity, newest first (one pipeline); one gone
    last."""
    pipe = r.pipeline(transaction=False)
    for conversation_id in ids:
        pipe.hget(keys.conversation_meta(conversation_id), "updated_at")
    activity = dict(zip(ids, pipe.execute() if ids else [], strict=True))
    return sorted(ids, key=lambda conversation_id: -float(activity[conversation_id] or 0))


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


def _candidates(r: redis.Redis, owner: str, ids: list[str], words: list[str]) -> list[str]:
    """The owner's conversations whose title and text together hold every word, by the
    index, once the documents of the conversations that changed are written anew (one
    INDEX_FOR_SEARCH each, in one pipeline), newest activity first as the index sorts them."""

    def queue(pipe):
        for conversation_id in ids:
            INDEX_FOR_SEARCH.queue(
                pipe,
                [
                    keys.conversation_meta(conversation_id),
                    keys.conversation_messages(conversation_id),
                    keys.conversation_search(conversation_id),
                ],
                [owner],
            )

    if ids:
        execute_pipeline(r, queue)
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
