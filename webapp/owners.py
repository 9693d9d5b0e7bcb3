"""Owners: who a conversation belongs to, as the string stored with it.

An owner is an account (``user:<user id>``) or a guest browser (``guest:<guest id>``). This
module alone builds, parses and tells them apart; everything else treats an owner as an
opaque string.
"""

USER, GUEST = "user", "guest"
MAX_LENGTH = 200
"""No owner string is longer (ids are short tokens); a longer one is not an owner."""


def of_user(user_id: str) -> str:
    """The owner string of an account's conversations."""
    return f"{USER}:{user_id}"


def of_guest(guest_id: str) -> str:
    """The owner string of a guest browser's conversations."""
    return f"{GUEST}:{guest_id}"


ACCOUNT_PREFIX = of_user("")
"""How every account's owner string begins (for a script that tells accounts apart)."""


def _parts(owner: str) -> tuple[str, str]:
    kind, _, ident = owner.partition(":")
    return kind, ident


def is_account(owner: str) -> bool:
    """Whether an account owns it (a visitor must log in to see it)."""
    return _parts(owner)[0] == USER


def is_guest(owner: str) -> bool:
    return _parts(owner)[0] == GUEST


def user_id(owner: str) -> str | None:
    """The account's user id, or None for a guest."""
    kind, ident = _parts(owner)
    return ident if kind == USER else None


def parse(text: str) -> str | None:
    """``text`` if it is a well-formed owner string, else None."""
    kind, ident = _parts(text)
    if kind not in (USER, GUEST) or not ident or len(text) > MAX_LENGTH:
        return None
    return text


def label(owner: str, username: str | None) -> str:
    """How people are shown an owner: the account's username (or "deleted account" and the
    start of its id when the account is gone), or "guest" and the start of the guest's id."""
    kind, ident = _parts(owner)
    if kind == USER:
        return username or f"deleted account {ident[:6]}"
    if kind == GUEST:
        return f"guest {ident[:6]}"
    return owner
