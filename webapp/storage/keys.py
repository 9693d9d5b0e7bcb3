"""Every Redis key the app uses, built in one place.

Keys of one conversation share the hash tag ``{<conversation id>}`` so that the
multi-key scripts and transactions over them also run on Redis Cluster.
Keys of one owner share the tag ``{<owner>}``, of one user ``{<user id>}``, and a
resume code has the tag ``{<code hash>}``: each lives on one master, and what
spans two tags is never one script (see ``scripts`` for what that leaves
non-atomic on a cluster).
"""

PREFIX = "rc"


def conversation_meta(conversation_id: str) -> str:
    """Hash: owner, created_at, updated_at, title, message_count, and the tokens billed for
    its replies (input_tokens, cache_write_tokens, cache_read_tokens, output_tokens).
    TTL: transcript retention."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:meta"


def conversation_messages(conversation_id: str) -> str:
    """List of message JSON strings, oldest first. TTL: transcript retention."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:messages"


def conversation_session(conversation_id: str) -> str:
    """Hash: started_at, expires_at of the working context; while parked, parked_until,
    code_hash, code_hint; once resumed, resumed_with (the code's hash). TTL: idle time,
    capped by max age."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:session"


def conversation_recent_ids(conversation_id: str) -> str:
    """List of the newest message ids, newest first, capped. TTL: transcript retention."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:recent_ids"


def conversation_draft(conversation_id: str) -> str:
    """String: what the owner is typing in the message box, not yet sent. TTL: the
    transcript's (a conversation has one owner, so one draft)."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:draft"


def conversation_run(conversation_id: str) -> str:
    """Hash: the conversation's latest run (id, status, message_id, owner, heartbeat_at,
    error...). TTL: transcript retention."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:run"


def conversation_codes(conversation_id: str) -> str:
    """Set: the keyed hashes of the resume codes issued for the conversation, so that they
    go with it. TTL: transcript retention (at least a parked session's code lifetime)."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:codes"


def conversation_runs(conversation_id: str) -> str:
    """Sorted set: the ids of the conversation's runs whose events may still exist, scored
    by when those expire (+inf while running), so that they go with it. TTL: transcript
    retention."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:runs"


def conversation_keys(conversation_id: str) -> tuple[str, ...]:
    """Every key of one conversation but its runs' events, in the order the scripts take
    them (KEYS[1..8]): meta, messages, session, recent ids, draft, run, codes, runs."""
    return (
        conversation_meta(conversation_id),
        conversation_messages(conversation_id),
        conversation_session(conversation_id),
        conversation_recent_ids(conversation_id),
        conversation_draft(conversation_id),
        conversation_run(conversation_id),
        conversation_codes(conversation_id),
        conversation_runs(conversation_id),
    )


SEARCH_SUFFIX = ":search"


def conversation_search(conversation_id: str) -> str:
    """Hash: owner, title, body (every message's text), updated_at and version of the
    conversation as last indexed, for a search module's index (written only where the
    server has one, see ``search``). TTL: the conversation's, as read when it was written;
    deleted with the conversation."""
    return f"{PREFIX}:conv:{{{conversation_id}}}{SEARCH_SUFFIX}"


def run_events(conversation_id: str, run_id: str) -> str:
    """Stream of one run's chunks ({t: text}) and its end ({status: ...}), capped in length.
    TTL: transcript retention while running, a short grace period after it ends."""
    return f"{PREFIX}:conv:{{{conversation_id}}}:run:{run_id}:events"


DEADLINES_PREFIX = f"{PREFIX}:deadlines:{{deadlines}}"
"""Prefix of the deadline mirrors (see ``deadlines``): they share one hash tag, for one
script to keep them in step on a cluster (where they live on one master)."""

DEADLINES_CONVERSATIONS = f"{DEADLINES_PREFIX}:conversations"
"""Sorted set: every conversation's id, scored by when its transcript ends (s). No TTL:
the sweep removes members whose conversation is gone."""

DEADLINES_OWNERS = f"{DEADLINES_PREFIX}:owners"
"""Hash: conversation id -> its owner, for the sweep to find the owner's index entry of a
conversation that is gone. No TTL: entries leave with DEADLINES_CONVERSATIONS' members."""

DEADLINES_SESSIONS = f"{DEADLINES_PREFIX}:sessions"
"""Sorted set: the id of every conversation with a session, scored by when the session
ends (s). No TTL: the sweep removes members whose session has ended."""

DEADLINES_SESSION_CAPS = f"{DEADLINES_PREFIX}:session-caps"
"""Sorted set: the same ids, scored by when the session reaches its maximum age (s), which
caps how far it slides. No TTL: members leave with DEADLINES_SESSIONS' ones."""

DEADLINES_PARKED = f"{DEADLINES_PREFIX}:parked"
"""Sorted set: the id of every conversation whose session was parked, scored by when the
parking (and its resume code) ends (s). No TTL: the sweep removes members past their end."""

DEADLINES = (
    DEADLINES_CONVERSATIONS,
    DEADLINES_OWNERS,
    DEADLINES_SESSIONS,
    DEADLINES_SESSION_CAPS,
    DEADLINES_PARKED,
)
"""Every deadline mirror, in the order MIRROR_DEADLINES takes them."""

DEADLINES_FORGOTTEN_TOGETHER = (
    DEADLINES_CONVERSATIONS,
    DEADLINES_SESSIONS,
    DEADLINES_SESSION_CAPS,
    DEADLINES_PARKED,
    DEADLINES_OWNERS,
)
"""The mirrors a conversation leaves when it is gone, the hash last (as FORGET_DUE takes
them)."""

SWEEP_LOCK = f"{PREFIX}:sweep-lock"
"""String: the process (pid) sweeping this interval. TTL: SWEEP_INTERVAL_SECONDS, so that
one process of the whole deployment sweeps per interval."""

RUNS_RUNNING = f"{PREFIX}:runs:running"
"""Sorted set: "<conversation id> <run id>" of every running run, scored by its last
heartbeat, for the reaper. No TTL: members leave when their run ends."""


def running_run_member(conversation_id: str, run_id: str) -> str:
    """A run's member in RUNS_RUNNING."""
    return f"{conversation_id} {run_id}"


def resume_code(code_hash: str) -> str:
    """Hash: conversation_id, owner, issued_at, expires_at, used_at of one resume code,
    named by the code's keyed hash (the code itself is never stored). TTL: the code's
    lifetime plus a grace period, so that a late entry can be told "expired"."""
    return f"{PREFIX}:code:{{{code_hash}}}"


RATE_LIMITS_PREFIX = f"{PREFIX}:limits"
"""Prefix of every rate limit window."""


def rate_limit_window(client: str, scope: str, limit: int, window_name: str) -> str:
    """Hash: count, started (ms) of one window of a rate limit. The client is the hash tag:
    its windows share a Redis Cluster slot, for one script to take a slot in each.
    TTL: the rest of the window."""
    return f"{RATE_LIMITS_PREFIX}:{{{client}}}:{scope}:{limit}/{window_name}"


def owner_conversations(owner: str) -> str:
    """Sorted set: conversation ids scored by last activity. TTL: transcript retention."""
    return f"{PREFIX}:owner:{{{owner}}}:conversations"


def owner_watchers(owner: str) -> str:
    """Sorted set: the owner's open event streams (watch ids), scored by when each one's lease
    ends (s), so that a stream its process lost stops counting. TTL: the longest lease."""
    return f"{PREFIX}:owner:{{{owner}}}:watchers"


def owner_shares(owner: str) -> str:
    """Sorted set: the tokens of the owner's share links, scored by when each was made (s).
    TTL: the share links' lifetime."""
    return f"{PREFIX}:owner:{{{owner}}}:shares"


def share(token: str) -> str:
    """Hash: conversation_id, owner, title, created_at, expires_at, message_count, messages
    (a JSON list of the messages as stored) of one share link, a snapshot named by its
    token. TTL: the share links' lifetime."""
    return f"{PREFIX}:share:{{{token}}}"


SHARES = f"{PREFIX}:shares"
"""Sorted set: every share link's token, scored by when it ends (s), for the admin console.
No TTL: members past their end are removed as it is read."""


def user_profile(user_id: str) -> str:
    """Hash: username, password_hash, is_admin, created_at. No TTL."""
    return f"{PREFIX}:user:{{{user_id}}}:profile"


def user_logins(user_id: str) -> str:
    """Sorted set: the user's live login tokens, scored by when each ends. TTL: the longest."""
    return f"{PREFIX}:user:{{{user_id}}}:logins"


USERNAMES = f"{PREFIX}:usernames"
"""Hash: lower-cased username -> user id. No TTL."""


def login_failures(username: str, address: str) -> str:
    """Hash: consecutive failed logins for a username from one client address (count,
    until), so that an attacker's failures never lock its owner out elsewhere. TTL: one
    day."""
    return f"{PREFIX}:login-failures:{{{username.lower()}}}:{address}"


OWNER_CONVERSATIONS_PATTERN = f"{PREFIX}:owner:*:conversations"
"""SCAN pattern matching every owner's conversation index."""


CONVERSATION_META_PATTERN = f"{PREFIX}:conv:*:meta"
"""SCAN pattern matching every conversation's meta hash (one per conversation)."""

CONVERSATION_RUN_PATTERN = f"{PREFIX}:conv:*:run"
"""SCAN pattern matching every conversation's latest-run hash."""

CONVERSATION_KEYS_PATTERN = f"{PREFIX}:conv:*"
"""SCAN pattern matching every key of every conversation."""


def conversation_keys_pattern(conversation_id: str) -> str:
    """SCAN pattern matching every key of one conversation, run events streams included."""
    escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in conversation_id)
    return f"{PREFIX}:conv:{{{escaped}}}:*"


def conversation_id_of(key: str) -> str | None:
    """The conversation a key belongs to (its hash tag), or None for any other key."""
    start = f"{PREFIX}:conv:{{"
    if not key.startswith(start) or "}" not in key:
        return None
    return key[len(start) : key.index("}")]


ADMIN_AUDIT = f"{PREFIX}:admin:audit"
"""Stream of admin actions (at, admin, action, target, conversations, keys_deleted, detail),
capped in length (approximately, newest kept). No TTL."""

METRICS_COUNTERS = f"{PREFIX}:metrics:counters"
"""Hash: "<counter>" or "<counter>:<label value>" -> count since the data began. No TTL."""


def resume_failures_in_hour(hour: int) -> str:
    """Hash: reason -> failed resume code entries in one hour (hours since the epoch, UTC).
    TTL: two days."""
    return f"{PREFIX}:metrics:resume-failures:{hour}"


RESUME_CODES_PATTERN = f"{PREFIX}:code:*"
"""SCAN pattern matching every resume code."""
