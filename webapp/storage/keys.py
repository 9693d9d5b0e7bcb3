"""Every Redis key the app uses, built in one place.

Keys of one conversation share the hash tag ``{<conversation id>}`` so that the
multi-key scripts and transactions over them also run on Redis Cluster.
Keys of one owner share the tag ``{<owner>}`` for the same reason.
"""

PREFIX = "rc"


def conversation_meta(conversation_id: str) -> str:
    """Hash: owner, created_at, updated_at, title, message_count. TTL: transcript retention."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:meta"


def conversation_messages(conversation_id: str) -> str:
    """List of message JSON strings, oldest first. TTL: transcript retention."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:messages"


def conversation_session(conversation_id: str) -> str:
    """Hash: started_at, expires_at of the working context. TTL: idle time, capped by max age."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:session"


def conversation_recent_ids(conversation_id: str) -> str:
    """List of the newest message ids, newest first, capped. TTL: transcript retention."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:recent_ids"


def conversation_keys(conversation_id: str) -> tuple[str, str, str, str]:
    """The keys of one conversation, in the order the scripts take them."""
    return (
        conversation_meta(conversation_id),
        conversation_messages(conversation_id),
        conversation_session(conversation_id),
        conversation_recent_ids(conversation_id),
    )


def owner_conversations(owner: str) -> str:
    """Sorted set: conversation ids scored by last activity. TTL: transcript retention."""
    return f"{PREFIX}:owner:{{{owner}}}:conversations"


OWNER_CONVERSATIONS_PATTERN = f"{PREFIX}:owner:*:conversations"
"""SCAN pattern matching every owner's conversation index."""
