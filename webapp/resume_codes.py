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

from webapp import deadlines, metrics, owners, rate_limits
from webapp.conversations import Conversation, Lifetimes, queue_indexes
from webapp.storage import keys
from webapp.storage.scripts import (
    PARK_SESSION,
    RESUME_AND_SETTLE,
    RESUME_PARKED_SESSION,
    UPDATE_IF_EXISTS,
    execute_pipeline,
    one_server,
)

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH, GROUP = 16, 4
FORMAT_HINT = "four groups of four letters and digits, like 7K2M-9XQD-4HPN-T3VA"
LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1", "U": "V"})
EXPIRED_GRACE_SECONDS = 7 * 86400
"""How long after its end a code is still recognised, to answer "expired" not "unknown"."""

UNKNOWN, EXPIRED, USED, MALFORMED, WRONG_ACCOUNT, RATE_LIMITED = (
    "unknown", "expired", "used", "malformed", "wrong_account", "rate_limited",
)  # fmt: skip
"""Why a code is refused; each failure is counted by its reason."""

FAILED_ENTRY_LIMITS = (rate_limits.per_minute(10), rate_limits.per_day(100))
"""Failed code entries allowed per client address (S4); past them, RATE_LIMITED."""
FAILED_ENTRIES = "resume.redeem"
"""The scope of the failed entries' windows, in their keys."""


class CodeRefused(Exception):
    """A code that cannot be redeemed; ``reason`` is one of the constants above."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LoginNeeded(Exception):
    """The code is for an account's conversation: its visitor must log in first, then
    redeem ``digest`` (the code's keyed hash, never the code) with ``redeem_for``."""

    def __init__(self, digest: str) -> None:
        super().__init__("log in to redeem this code")
        self.digest = digest


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
        park = [digest, code[:GROUP], ttl]
        # While parked, everything of it lives the code's lifetime, and no longer slides.
        parked = Lifetimes(session_idle=ttl, session_max=ttl, transcript_retention=ttl)
        queue_indexes(
            pipe,
            conversation.owner,
            conversation.id,
            parked,
            deadlines.PARKED_FOR,
            script=(PARK_SESSION, keys.conversation_keys(conversation.id), park),
            activity=False,
            parked_seconds=ttl,
        )

    replaced, *_ = execute_pipeline(r, queue)
    if replaced is None:
        r.delete(code_key)
        return None
    if replaced:
        # The old code is kept, marked used, so that typing it says so (not "unknown").
        UPDATE_IF_EXISTS.run(r, [keys.resume_code(replaced)], ["used_at", int(now)])
    metrics.count_resume_code_issued(r)
    return IssuedCode(formatted(code), now + ttl)


def look_up(secret: str, entry: str) -> str:
    """The keyed hash of a typed code; CodeRefused(MALFORMED) if it cannot be a code."""
    code = normalise(entry)
    if code is None:
        raise CodeRefused(MALFORMED)
    return keyed_hash(secret, code)


def _usable(code: dict[str, str], digest: str, visitor: str) -> tuple[str, str]:
    """The conversation id and owner of the code ``digest``, read whole (``code``), if
    ``visitor`` may redeem it now: an account's code only for that account (LoginNeeded for
    a guest), a guest's for anyone. CodeRefused (UNKNOWN, WRONG_ACCOUNT, EXPIRED, USED)
    otherwise."""
    if not code:
        raise CodeRefused(UNKNOWN)
    owner = code["owner"]
    if owner != visitor and owners.is_account(owner):
        if not owners.is_account(visitor):
            raise LoginNeeded(digest)
        raise CodeRefused(WRONG_ACCOUNT)
    if float(code["expires_at"]) <= time.time():
        raise CodeRefused(EXPIRED)
    if "used_at" in code:
        raise CodeRefused(USED)
    return code["conversation_id"], owner


def redeem_for(
    r: redis.Redis,
    digest: str,
    visitor: str,
    lifetimes: Lifetimes,
    slot: rate_limits.Slot | None = None,
    code: dict[str, str] | None = None,
) -> str:
    """Use the code once for ``visitor`` (an owner): its parked session comes back whole.
    An account's code works only for that account (LoginNeeded for a guest); a guest's for
    anyone, whose conversation it then becomes. Returns the conversation id; CodeRefused
    (USED, EXPIRED, UNKNOWN, WRONG_ACCOUNT) otherwise, counted by its reason. ``code`` is
    the code's hash if already read; ``slot``, the failed entry's slot taken for it, is
    given back once the code is known to be right.

    Two round trips on one server: the code read (``code``, else here); then the session
    resumed, which is what uses the code exactly once (the session stops being parked under
    it), the conversation given to the visitor, and, if it resumed, its index entries moved,
    its deadlines mirrored and the redemption counted (RESUME_AND_SETTLE), with the code
    marked used. On a cluster, whose masters hold the indexes and the mirrors apart, the
    settling is a third round trip, as the resume said. Either way an index never lists a
    conversation its owner does not own, and an entry that lost the race to use the code
    mirrors nothing. A resume sent again after a dropped connection lost its answer finds
    that it resumed the session already for this visitor: the redemption stands, and is
    not settled or counted again."""
    try:
        if code is None:
            code = r.hgetall(keys.resume_code(digest))
        conversation_id, owner = _usable(code, digest, visitor)
        settles = one_server(r)  # the resume's script settles it too
        conversation = keys.conversation_keys(conversation_id)
        args = [
            digest,
            lifetimes.session_idle,
            lifetimes.session_max,
            lifetimes.transcript_retention,
            owner,
            visitor,
        ]

        def resume(pipe):
            if settles:
                indexes = [keys.owner_conversations(owner), keys.owner_conversations(visitor)]
                RESUME_AND_SETTLE.queue(
                    pipe,
                    [*conversation, *indexes, *keys.DEADLINES, keys.METRICS_COUNTERS],
                    [
                        *args,
                        conversation_id,
                        time.time(),
                        lifetimes.transcript_retention,
                        metrics.REDEEMED_FIELD,
                    ],
                )
            else:
                RESUME_PARKED_SESSION.queue(pipe, conversation, args)
            UPDATE_IF_EXISTS.queue(pipe, [keys.resume_code(digest)], ["used_at", int(time.time())])
            if slot:
                rate_limits.queue_give_back_slot(pipe, slot)  # a right code is no failure

        (resumed, moved), *_ = execute_pipeline(r, resume)
        if resumed == -1:
            raise CodeRefused(EXPIRED)  # the parked session ended with the code's last second
        if not resumed:
            raise CodeRefused(USED)  # used meanwhile, or withdrawn: the user carried on
    except CodeRefused as refused:
        metrics.count_resume_failure(r, refused.reason)
        raise
    if settles:
        return conversation_id

    def settle(pipe):
        if moved:  # a guest's code is the guest's key: the conversation joins this visitor
            pipe.zrem(keys.owner_conversations(owner), conversation_id)
            queue_indexes(pipe, visitor, conversation_id, lifetimes, deadlines.RESTARTED)
        else:
            queue_indexes(
                pipe, owner, conversation_id, lifetimes, deadlines.RESTARTED, activity=False
            )
        metrics.queue_resume_code_redeemed(pipe)

    execute_pipeline(r, settle)
    return conversation_id


def redeem_entry(
    r: redis.Redis, secret: str, entry: str, visitor: str, address: str, lifetimes: Lifetimes
) -> str:
    """Redeem a typed code for ``visitor`` (see ``redeem_for``), held to the failed entries
    allowed from ``address``: each entry takes a failure's slot before its code can be
    used, so that entries sent together cannot all pass a check made before any of them is
    counted (S4); a right code gives it back. The slot is taken in the round trip that reads
    the code, which uses nothing. CodeRefused(RATE_LIMITED) past the limit."""
    try:
        digest = look_up(secret, entry)
    except CodeRefused:
        digest = None  # malformed: a failed entry all the same, once its slot is taken

    if digest is None:
        slot, code = rate_limits.reserve_slot(r, FAILED_ENTRY_LIMITS, FAILED_ENTRIES, address), {}
    else:
        slot, code = rate_limits.reserve_slot_and_read(
            r,
            FAILED_ENTRY_LIMITS,
            FAILED_ENTRIES,
            address,
            lambda pipe: pipe.hgetall(keys.resume_code(digest)),
        )
    reason = RATE_LIMITED if slot is None else MALFORMED if digest is None else None
    if reason:
        metrics.count_resume_failure(r, reason)
        raise CodeRefused(reason)
    try:
        return redeem_for(r, digest, visitor, lifetimes, slot, code)
    except LoginNeeded:
        rate_limits.give_back_slot(r, slot)  # a right code, to be redeemed once logged in
        raise
