"""Quotas: how much one visitor may keep and ask for, so that nobody can fill Redis or
spend the model for everyone.

Each quota takes its slot atomically before anything is written, and a refused request
writes nothing: a visitor flooding forks past the limit adds no key. Per owner: model calls
and new conversations (forks and restores included) per minute, resume codes per hour, and
live conversations at once. A fresh cookie is a new guest, so guests are also limited per
client address, together: their model calls and their new conversations.
"""

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from webapp import conversations, owners, rate_limits
from webapp.rate_limits import Slot, Window
from webapp.storage import keys
from webapp.storage.scripts import RESERVE_INDEX_ENTRY, RESERVE_SLOT, execute_pipeline

MODEL_CALLS = "model-calls"
NEW_CONVERSATIONS = "new-conversations"
RESUME_CODES = "resume-codes"
SEARCHES = "searches"
"""The scopes of the quotas' windows, in their keys."""

MODEL_CALLS_TEXT = (
    "You're asking faster than the assistant can answer. Wait a minute, then send again: "
    "your message is still in the box."
)
NEW_CONVERSATIONS_TEXT = (
    "You're starting new conversations faster than allowed. Wait a minute, then try again: "
    "your text is still here."
)
SEARCHES_TEXT = "You're searching faster than allowed. Wait a minute, then search again."
RESUME_CODES_TEXT = (
    "You've asked for more resume codes this hour than allowed. Keep chatting here, or try "
    "again in an hour."
)


def live_conversations_text(limit: int, guest: bool) -> str:
    account = " (log in or register: an account keeps more)" if guest else ""
    return (
        f"You have {limit:,} conversations, the most you can keep{account}. Delete one you no "
        "longer need, then try again: your text is still here."
    )


@dataclass(frozen=True)
class Limits:
    """How much one visitor may keep and ask for, as the settings say (built once)."""

    model_calls: tuple[Window, ...]
    """Per owner: replies, Continue, Retry, catch-ups and restores."""
    guest_model_calls_per_address: tuple[Window, ...]
    """All guests of one client address together."""
    live_conversations_per_guest: int
    live_conversations_per_account: int
    new_conversations: tuple[Window, ...]
    """Per owner: new conversations, forks and restores."""
    guest_new_conversations_per_address: tuple[Window, ...]
    resume_codes: tuple[Window, ...]
    """Per owner: resume codes issued."""
    searches: tuple[Window, ...]
    """Per owner: searches of their conversations (each reads all of them)."""

    def live_conversations(self, owner: str) -> int:
        if owners.is_guest(owner):
            return self.live_conversations_per_guest
        return self.live_conversations_per_account


class QuotaReached(Exception):
    """A quota refused the request, and nothing was written. ``text`` says which and what
    to do; ``retry_after`` is when trying again may work (seconds), None for a quota that
    only frees up when the visitor deletes something."""

    def __init__(self, text: str, retry_after: int | None) -> None:
        super().__init__(text)
        self.text, self.retry_after = text, retry_after


def take_model_call(r: redis.Redis, limits: Limits, asker: str, address: str) -> list[Slot]:
    """One of ``asker``'s model-call slots, and for a guest one of its address's, taken in
    one round trip (see rate_limits.give_back_slot for when no call is made after all).
    Raises QuotaReached."""
    wanted = [(limits.model_calls, MODEL_CALLS, asker)]
    if owners.is_guest(asker):
        wanted.append((limits.guest_model_calls_per_address, MODEL_CALLS, address))
    slots = rate_limits.reserve_slots(r, wanted)
    if slots is None:
        raise QuotaReached(MODEL_CALLS_TEXT, rate_limits.MINUTE)
    return slots


@contextlib.contextmanager
def new_conversation(
    r: redis.Redis, limits: Limits, owner: str, address: str, retention: int
) -> Iterator[str]:
    """The id a new conversation of ``owner`` is to be created with in the block, listed in
    its index already so that conversations created together count. Raises QuotaReached
    (nothing written). If the block raises, the slots are given back and the entry goes
    unless the conversation was created. One round trip."""
    conversation_id = conversations.new_id()
    now, now_ms = time.time(), int(rate_limits.clock() * 1000)
    index = keys.owner_conversations(owner)
    window_keys, window_args = rate_limits.window_request(
        limits.new_conversations, NEW_CONVERSATIONS, owner
    )
    guest = owners.is_guest(owner)
    address_keys, address_args = rate_limits.window_request(
        limits.guest_new_conversations_per_address, NEW_CONVERSATIONS, address
    )
    most = limits.live_conversations(owner)

    def queue(pipe):
        RESERVE_INDEX_ENTRY.queue(
            pipe,
            (index, *window_keys),
            [now_ms, now, retention, most, conversation_id, *window_args],
        )
        if guest:
            RESERVE_SLOT.queue(pipe, address_keys, [now_ms, *address_args])

    owner_began, *address_began = execute_pipeline(r, queue)
    taken = []
    if owner_began:
        taken.append(Slot(window_keys, tuple(owner_began)))
    if address_began and address_began[0]:
        taken.append(Slot(address_keys, tuple(address_began[0])))

    def give_back() -> None:
        for slot in taken:
            rate_limits.give_back_slot(r, slot)
        if owner_began and not r.exists(keys.conversation_meta(conversation_id)):
            r.zrem(index, conversation_id)

    if len(taken) < 1 + guest:
        give_back()
        if owner_began == 0:
            raise QuotaReached(live_conversations_text(most, guest), None)
        raise QuotaReached(NEW_CONVERSATIONS_TEXT, rate_limits.MINUTE)
    try:
        yield conversation_id
    except Exception:
        give_back()
        raise


def take_resume_code(r: redis.Redis, limits: Limits, owner: str) -> Slot:
    """One of ``owner``'s resume-code slots. Raises QuotaReached."""
    slot = rate_limits.reserve_slot(r, limits.resume_codes, RESUME_CODES, owner)
    if slot is None:
        raise QuotaReached(RESUME_CODES_TEXT, rate_limits.HOUR)
    return slot


def take_search(r: redis.Redis, limits: Limits, owner: str) -> Slot:
    """One of ``owner``'s search slots. Raises QuotaReached."""
    slot = rate_limits.reserve_slot(r, limits.searches, SEARCHES, owner)
    if slot is None:
        raise QuotaReached(SEARCHES_TEXT, rate_limits.MINUTE)
    return slot


@dataclass(frozen=True)
class Usage:
    """How much of one quota an owner uses now."""

    what: str
    used: int
    limit: int


def usage(r: redis.Redis, limits: Limits, owner: str, retention: int) -> list[Usage]:
    """What ``owner`` uses of each of its quotas, for the console; one round trip."""
    windows = [
        (f"{what} this {window.name}", window, scope)
        for what, scope_windows, scope in (
            ("Model calls", limits.model_calls, MODEL_CALLS),
            ("New conversations", limits.new_conversations, NEW_CONVERSATIONS),
            ("Resume codes", limits.resume_codes, RESUME_CODES),
        )
        for window in scope_windows
    ]
    pipe = r.pipeline(transaction=False)
    pipe.zcount(keys.owner_conversations(owner), f"({time.time() - retention}", "+inf")
    for _, window, scope in windows:
        rate_limits.queue_slots_taken(pipe, window, scope, owner)
    live, *stored = pipe.execute()
    return [
        Usage("Live conversations", live, limits.live_conversations(owner)),
        *(
            Usage(what, rate_limits.slots_taken(window, answer), window.limit)
            for (what, window, _), answer in zip(windows, stored, strict=True)
        ),
    ]
