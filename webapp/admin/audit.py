"""The admin console's actions, each written to the audit log: clearing one conversation,
all of an owner's, or all expired ones; signing a user out everywhere; revoking a share
link."""

import time
from dataclasses import dataclass

import redis

from webapp import accounts, deletion, shares
from webapp.admin.listing import EXPIRED, describe_owner, walk_conversations
from webapp.deletion import Deleted
from webapp.storage import keys

AUDIT_LOG_MAX = 10_000
"""The audit log keeps about this many newest entries."""
AUDIT_SHOWN = 50


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


def clear_conversation(r: redis.Redis, conversation_id: str, admin: str) -> Deleted:
    """Delete every key of one conversation and what points at it; audited."""
    owner = r.hget(keys.conversation_meta(conversation_id), "owner") or ""
    cleared = deletion.delete_conversations(r, {conversation_id: owner})
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


def clear_owner(r: redis.Redis, owner: str, admin: str) -> Deleted:
    """Delete every conversation of ``owner`` (all of them: found by SCAN, and through the
    owner's index); audited."""
    found = dict.fromkeys(r.zrange(keys.owner_conversations(owner), 0, -1), owner)
    found |= {cid: its_owner for cid, its_owner, _ in walk_conversations(r) if its_owner == owner}
    cleared = deletion.delete_conversations(r, found, only_owner=owner)
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


def clear_expired(r: redis.Redis, admin: str) -> Deleted:
    """Delete every expired conversation (transcript kept, session gone); one that becomes
    active meanwhile is kept. Audited."""
    found = {cid: owner for cid, owner, state in walk_conversations(r) if state == EXPIRED}
    cleared = deletion.delete_conversations(r, found, only_expired=True)
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


def revoke_share(r: redis.Redis, token: str, admin: str) -> shares.Share | None:
    """End one share link at once; audited. The link ended, or None if it had already."""
    ended = shares.revoke(r, token)
    if ended is not None:
        record(
            r,
            admin,
            "revoke share link",
            ended.conversation_id,
            keys_deleted=1,
            detail=f"owner {describe_owner(r, ended.owner)}, made {ended.created_at:.0f}",
        )
    return ended
