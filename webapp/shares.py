"""Share links: a read-only snapshot of a conversation as it was when shared, at a URL with
an unguessable token that anyone may open without logging in. The snapshot keeps no owner
identity for its readers; its owner lists and revokes their links, admins see and revoke
every one. A link ends when its lifetime does, when it is revoked, or when the
conversation it was made from is deleted.
"""

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from webapp import conversations
from webapp.conversations import ConversationGone, Message
from webapp.quotas import QuotaReached
from webapp.storage import keys
from webapp.storage.scripts import RESERVE_INDEX_ENTRY

TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")
"""A share link's token: 192 random bits, URL-safe."""
_FIELDS = ("conversation_id", "owner", "title", "created_at", "expires_at", "message_count")


def too_many_text(most: int) -> str:
    return (
        f"You have {most:,} share links, the most you can keep. Revoke one you no longer need, "
        "then share again."
    )


@dataclass(frozen=True)
class Share:
    token: str
    conversation_id: str
    owner: str
    title: str
    created_at: float
    expires_at: float
    message_count: int


def _share(token: str, values: list) -> Share | None:
    if values[0] is None:
        return None
    conversation_id, owner, title, created_at, expires_at, message_count = values
    return Share(
        token,
        conversation_id,
        owner,
        title,
        float(created_at),
        float(expires_at),
        int(message_count),
    )


def create(r: redis.Redis, owner: str, conversation_id: str, lifetime: int, most: int) -> str:
    """A new share link of the owner's conversation as it is now; its token. Raises
    QuotaReached with ``most`` live links already (nothing written), ConversationGone."""
    conversation = conversations.get_conversation(r, conversation_id)
    if conversation is None or conversation.owner != owner:
        raise ConversationGone(conversation_id)
    stored = r.lrange(keys.conversation_messages(conversation_id), 0, -1)
    token, now = secrets.token_urlsafe(24), time.time()
    listed = RESERVE_INDEX_ENTRY.run(r, [keys.owner_shares(owner)], [0, now, lifetime, most, token])
    if listed == 0:
        raise QuotaReached(too_many_text(most), None)
    pipe = r.pipeline(transaction=False)
    pipe.hset(
        keys.share(token),
        mapping={
            "conversation_id": conversation_id,
            "owner": owner,
            "title": conversation.title,
            "created_at": now,
            "expires_at": now + lifetime,
            "message_count": len(stored),
            "messages": json.dumps(stored, ensure_ascii=False),
        },
    )
    pipe.expire(keys.share(token), lifetime)
    pipe.zadd(keys.SHARES, {token: now + lifetime})
    pipe.execute()
    return token


def read(r: redis.Redis, token: str) -> tuple[Share, list[Message]] | None:
    """A live share link and its snapshot's messages; None for one revoked, ended or unknown."""
    if not TOKEN.match(token):
        return None
    values = r.hmget(keys.share(token), *_FIELDS, "messages")
    found = _share(token, values[:-1])
    if found is None:
        return None
    return found, [Message.from_json(raw) for raw in json.loads(values[-1])]


def _read_shares(r: redis.Redis, tokens: list[str]) -> list[Share]:
    pipe = r.pipeline(transaction=False)
    for token in tokens:
        pipe.hmget(keys.share(token), *_FIELDS)
    found = [_share(token, values) for token, values in zip(tokens, pipe.execute(), strict=True)]
    return [share for share in found if share is not None]


def of_conversation(r: redis.Redis, owner: str, conversation_id: str) -> list[Share]:
    """The owner's live links to one conversation, newest first."""
    tokens = r.zrevrange(keys.owner_shares(owner), 0, -1)
    return [s for s in _read_shares(r, tokens) if s.conversation_id == conversation_id]


def newest(r: redis.Redis, count: int) -> list[Share]:
    """Every owner's live links, the ``count`` that end last first (for the admin console)."""
    r.zremrangebyscore(keys.SHARES, "-inf", time.time())
    return _read_shares(r, r.zrevrange(keys.SHARES, 0, count - 1))


def revoke(r: redis.Redis, token: str, owner: str | None = None) -> Share | None:
    """End a link at once (only if it is ``owner``'s, when given); the link ended, or None."""
    if not TOKEN.match(token):
        return None
    (found,) = _read_shares(r, [token]) or [None]
    if found is None or (owner is not None and found.owner != owner):
        return None
    _delete(r, [found])
    return found


def _delete(r: redis.Redis, ended: list[Share]) -> None:
    pipe = r.pipeline(transaction=False)
    for share in ended:  # one key each: every link has a hash tag of its own
        pipe.delete(keys.share(share.token))
        pipe.zrem(keys.owner_shares(share.owner), share.token)
        pipe.zrem(keys.SHARES, share.token)
    pipe.execute()


def revoke_for_conversations(r: redis.Redis, owners_of: Mapping[str, str]) -> int:
    """End every link made from the conversations (id -> owner) just deleted; how many."""
    pipe = r.pipeline(transaction=False)
    by_owner = sorted(set(owners_of.values()))
    for owner in by_owner:
        pipe.zrange(keys.owner_shares(owner), 0, -1)
    tokens = [token for listed in pipe.execute() for token in listed] if by_owner else []
    ended = [s for s in _read_shares(r, tokens) if owners_of.get(s.conversation_id) == s.owner]
    if ended:
        _delete(r, ended)
    return len(ended)
