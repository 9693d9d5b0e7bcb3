"""Resume codes: a typeable code that brings a parked session back, whole, on any device.

A code is 16 characters of Crockford's base32 (80 bits from ``secrets``; no I, L, O or U,
which look like other characters), shown in four groups. Entry ignores case, spaces and
hyphens, and reads O as 0 and I or L as 1. Only a keyed hash of the code is stored (HMAC
with the app's secret), so a code can be shown once, when it is issued: asking again
issues a new one and withdraws the old (one live code per conversation).
"""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import redis

from webapp.conversations import Conversation, Lifetimes
from webapp.storage import keys
from webapp.storage.scripts import (
    PARK_SESSION,
    REDEEM_CODE_ONCE,
    RESUME_PARKED_SESSION,
    UPDATE_IF_EXISTS,
    execute_pipeline,
)

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH, GROUP = 16, 4
FORMAT_HINT = "four groups of four letters and digits, like 7K2M-9XQD-4HPN-T3VA"
LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1", "U": "V"})
EXPIRED_GRACE_SECONDS = 7 * 86400
"""How long after its end a code is still recognised, to answer "expired" not "unknown"."""

UNKNOWN, EXPIRED, USED, MALFORMED, WRONG_ACCOUNT = (
    "unknown", "expired", "used", "malformed", "wrong_account",
)  # fmt: skip


class CodeRefused(Exception):
    """A code that cannot be redeemed; ``reason`` is one of the constants above."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IssuedCode:
    code: str
    """Formatted for reading; shown once, never stored."""
    expires_at: float


def generate() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def formatted(code: str) -> str:
    return "-".join(code[i : i + GROUP] for i in range(0, LENGTH, GROUP))


def normalise(entry: str) -> str | None:
    """The code as typed, made canonical; None if it cannot be a code."""
    code = "".join(entry.split()).replace("-", "").upper().translate(LOOKALIKES)
    if len(code) != LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code


def keyed_hash(secret: str, code: str) -> str:
    return hmac.new(secret.encode(), code.encode(), hashlib.sha256).hexdigest()


def park(r: redis.Redis, secret: str, conversation: Conversation, ttl: int) -> IssuedCode | None:
    """Issue a new code for the conversation and park its session under it (frozen until
    the code expires); the conversation's previous code stops working. None if the session
    has already ended."""
    code = generate()
    digest = keyed_hash(secret, code)
    now = time.time()
    code_key = keys.resume_code(digest)
    pipe = r.pipeline(transaction=False)
    pipe.hset(
        code_key,
        mapping={
            "conversation_id": conversation.id,
            "owner": conversation.owner,
            "issued_at": now,
            "expires_at": now + ttl,
        },
    )
    pipe.expire(code_key, ttl + EXPIRED_GRACE_SECONDS)
    pipe.execute()

    def queue(pipe):
        PARK_SESSION.queue(
            pipe, keys.conversation_keys(conversation.id), [digest, code[:GROUP], ttl]
        )

    (replaced,) = execute_pipeline(r, queue)
    if replaced is None:
        r.delete(code_key)
        return None
    if replaced:
        # The old code is kept, marked used, so that typing it says so (not "unknown").
        execute_pipeline(
            r,
            lambda pipe: UPDATE_IF_EXISTS.queue(
                pipe, [keys.resume_code(replaced)], ["used_at", int(now)]
            ),
        )
    return IssuedCode(formatted(code), now + ttl)


def look_up(r: redis.Redis, secret: str, entry: str) -> str:
    """The keyed hash of a typed code; CodeRefused(MALFORMED) if it cannot be a code."""
    code = normalise(entry)
    if code is None:
        raise CodeRefused(MALFORMED)
    return keyed_hash(secret, code)


def owner_of(r: redis.Redis, digest: str) -> str:
    """The owner of the conversation a code is for; CodeRefused(UNKNOWN) if there is none."""
    owner = r.hget(keys.resume_code(digest), "owner")
    if owner is None:
        raise CodeRefused(UNKNOWN)
    return owner


def redeem(r: redis.Redis, digest: str, lifetimes: Lifetimes) -> str:
    """Use the code once: its parked session comes back whole. Returns the conversation id;
    CodeRefused(USED, EXPIRED or UNKNOWN) otherwise."""

    def consume(pipe):
        REDEEM_CODE_ONCE.queue(pipe, [keys.resume_code(digest)], [])

    (answer,) = execute_pipeline(r, consume)
    if answer[0] != "ok":
        raise CodeRefused(answer[0])
    conversation_id = answer[1]

    def resume(pipe):
        RESUME_PARKED_SESSION.queue(
            pipe,
            keys.conversation_keys(conversation_id),
            [digest, lifetimes.session_idle, lifetimes.session_max, lifetimes.transcript_retention],
        )

    (resumed,) = execute_pipeline(r, resume)
    if resumed == -1:
        raise CodeRefused(EXPIRED)  # the parked session ended with the code's last second
    if not resumed:
        raise CodeRefused(USED)  # withdrawn: the user carried on, or a newer code was issued
    return conversation_id
