"""Accounts: users with argon2 password hashes, logins that can be ended, login throttling.

A login is a random token kept in the user's set of logins in Redis, and in the user's
cookie. Every request checks the token there, so logout (which removes it) and "sign out
everywhere" (which removes them all) make old cookies useless, even replayed ones.
"""

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from webapp import owners, rate_limits
from webapp.storage import keys
from webapp.storage.scripts import RESERVE_LOGIN_ATTEMPT

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
PASSWORD_MIN, PASSWORD_MAX = 8, 256
FREE_FAILURES = 10
"""Consecutive failed logins per username and address before each further try must wait."""
LOGIN_FAILURES = "login.failures"
"""The scope of the failed logins' windows per client address, in their keys."""
MAX_WAIT_SECONDS = 15 * 60
FAILURES_KEPT_SECONDS = 86400

COMMON_PASSWORDS = frozenset(FREQUENCY_LISTS["passwords"])
"""The 30,000 most common passwords of breach corpora, as zxcvbn ships them (lower case):
the first an attacker tries (NIST 800-63B asks that they be refused)."""

_hasher = PasswordHasher()
# Verifying against this when the username is unknown takes as long as a real check, so
# the answer's timing does not tell whether the account exists.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AccountRejected(ValueError):
    """The registration cannot be made; the message says why, for the page."""


class TooManyRegistrations(Exception):
    """More accounts were registered from this client address in the hour than allowed."""


class LoginRefused(Exception):
    """Wrong username or password, or too many failures: ``retry_after`` seconds to wait;
    ``from_address`` when it is the client address that tried too often."""

    def __init__(self, retry_after: int = 0, from_address: bool = False) -> None:
        super().__init__(retry_after)
        self.retry_after, self.from_address = retry_after, from_address


@dataclass(frozen=True)
class User:
    id: str
    username: str
    is_admin: bool
    created_at: float

    @property
    def owner(self) -> str:
        """The owner string of this user's conversations."""
        return owners.of_user(self.id)


def _user(user_id: str, profile: dict) -> User:
    return User(
        id=user_id,
        username=profile["username"],
        is_admin=profile.get("is_admin") == "1",
        created_at=float(profile["created_at"]),
    )


REGISTRATIONS = "registrations"
"""The scope of the registrations' windows per client address, in their keys."""


def register(
    r: redis.Redis,
    username: str,
    password: str,
    address: str | None = None,
    limits: Sequence[rate_limits.Window] = (),
) -> User:
    """Create an account, or raise AccountRejected with a reason a user can act on. From a
    client ``address`` (the web; None: the command line), held to ``limits`` per address,
    checked once the form is valid and before its password is hashed: TooManyRegistrations
    past them, with nothing written."""
    if not USERNAME.match(username):
        raise AccountRejected(
            "A username has 3 to 32 letters, digits, dots, dashes or underscores."
        )
    _check_password(password)
    slot = rate_limits.reserve_slot(r, limits, REGISTRATIONS, address) if address else None
    if address and slot is None:
        raise TooManyRegistrations
    try:
        return _create(r, username, password)
    except AccountRejected:
        if slot:
            rate_limits.give_back_slot(r, slot)  # a taken name made no account
        raise


def _create(r: redis.Redis, username: str, password: str) -> User:
    """The account itself, or AccountRejected if the name is taken."""
    user_id = secrets.token_urlsafe(12)
    now = time.time()
    # The profile first, then the name: a crash in between leaves an unreachable profile,
    # never a name that points at nothing and can't be taken again.
    r.hset(
        keys.user_profile(user_id),
        mapping={"username": username, "password_hash": _hasher.hash(password), "created_at": now},
    )
    if not r.hsetnx(keys.USERNAMES, username.lower(), user_id):
        r.delete(keys.user_profile(user_id))
        raise AccountRejected("That username is taken. Choose another.")
    return User(user_id, username, is_admin=False, created_at=now)


def find_user(r: redis.Redis, username: str) -> User | None:
    user_id = r.hget(keys.USERNAMES, username.lower())
    return get_user(r, user_id) if user_id else None


def get_user(r: redis.Redis, user_id: str) -> User | None:
    profile = r.hgetall(keys.user_profile(user_id))
    return _user(user_id, profile) if profile else None


def _check_password(password: str) -> None:
    """NIST 800-63B's rules: long enough, not only white space, not a common password."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX or not password.strip():
        raise AccountRejected(
            f"A password has {PASSWORD_MIN} to {PASSWORD_MAX} characters; "
            "a few unrelated words make a good one."
        )
    if password.lower() in COMMON_PASSWORDS:
        raise AccountRejected(
            "That password is one of the most common ones, which attackers try first. "
            "Choose another; a few unrelated words make a good one."
        )


def set_password(r: redis.Redis, user: User, password: str) -> None:
    _check_password(password)
    r.hset(keys.user_profile(user.id), "password_hash", _hasher.hash(password))


def make_admin(r: redis.Redis, user: User) -> None:
    r.hset(keys.user_profile(user.id), "is_admin", "1")


def authenticate(
    r: redis.Redis,
    username: str,
    password: str,
    address: str,
    address_limits: Sequence[rate_limits.Window],
) -> User:
    """The user whose password this is; LoginRefused otherwise.

    Two limits, neither of which an attacker can turn against an account's owner: failed
    logins from one client address (``address_limits``, checked before any password hash
    is computed, so trying many usernames costs the server nothing), and consecutive
    failures for a username from that address, after FREE_FAILURES of which each try waits
    a delay that doubles with every further failure, up to MAX_WAIT_SECONDS (the owner, from
    another address, is not held up). Each try takes its place in both before its password
    is checked, so tries sent together are held to them too; a success gives it back.
    """
    slot = rate_limits.reserve_slot(r, address_limits, LOGIN_FAILURES, address)
    if slot is None:
        raise LoginRefused(retry_after=rate_limits.MINUTE, from_address=True)
    failures_key = keys.login_failures(username, address)
    wait = RESERVE_LOGIN_ATTEMPT.run(
        r, [failures_key], [time.time(), FREE_FAILURES, MAX_WAIT_SECONDS, FAILURES_KEPT_SECONDS]
    )
    if wait:
        rate_limits.give_back_slot(r, slot)  # refused before any hash: no failure to count
        raise LoginRefused(retry_after=wait)
    user_id = r.hget(keys.USERNAMES, username.lower())
    stored = r.hget(keys.user_profile(user_id), "password_hash") if user_id else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
        if stored is None:
            raise VerificationError
    except (VerificationError, InvalidHashError):
        raise LoginRefused() from None
    r.delete(failures_key)
    rate_limits.give_back_slot(r, slot)  # a right password is not a failure
    return get_user(r, user_id)


def start_login(r: redis.Redis, user: User, lifetime_seconds: int) -> str:
    """A new login token for ``user``, valid for ``lifetime_seconds``."""
    token = secrets.token_urlsafe(24)
    now = time.time()
    logins = keys.user_logins(user.id)
    pipe = r.pipeline(transaction=False)
    pipe.zremrangebyscore(logins, "-inf", now)  # forget logins that have ended
    pipe.zadd(logins, {token: now + lifetime_seconds})
    pipe.expire(logins, lifetime_seconds, gt=True)
    pipe.expire(logins, lifetime_seconds, nx=True)
    pipe.execute()
    return token


def user_of_login(r: redis.Redis, user_id: str, token: str) -> User | None:
    """The user if ``token`` is one of their live logins (one round trip), else None."""
    pipe = r.pipeline(transaction=False)
    pipe.zscore(keys.user_logins(user_id), token)
    pipe.hgetall(keys.user_profile(user_id))
    ends_at, profile = pipe.execute()
    if ends_at is None or ends_at < time.time() or not profile:
        return None
    return _user(user_id, profile)


def end_login(r: redis.Redis, user_id: str, token: str) -> None:
    r.zrem(keys.user_logins(user_id), token)


def sign_out_everywhere(r: redis.Redis, user_id: str) -> int:
    """End every login of the user; returns how many were live."""
    pipe = r.pipeline(transaction=True)
    pipe.zcount(keys.user_logins(user_id), time.time(), "+inf")
    pipe.delete(keys.user_logins(user_id))
    live, _ = pipe.execute()
    return live
