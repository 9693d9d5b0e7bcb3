"""Rate limits, kept in Redis so that they hold across workers and instances: a slot is
taken atomically in every window of a limit before the attempt, and given back when the
attempt turns out not to count."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from webapp.storage import keys
from webapp.storage.scripts import GIVE_BACK_SLOT, RESERVE_SLOT, execute_pipeline

clock = time.time
"""The clock the windows are measured with, in seconds. A module attribute, so that a test
can move it on instead of sleeping through minutes and days."""

MINUTE, HOUR, DAY = 60, 3600, 86_400


@dataclass(frozen=True)
class Window:
    """At most ``limit`` slots in ``seconds``; ``name`` (such as "minute") names it in keys."""

    limit: int
    seconds: int
    name: str


def per_minute(limit: int) -> Window:
    return Window(limit, MINUTE, "minute")


def per_hour(limit: int) -> Window:
    return Window(limit, HOUR, "hour")


def per_day(limit: int) -> Window:
    return Window(limit, DAY, "day")


@dataclass(frozen=True)
class Slot:
    """A slot taken in each window of a limit: their keys, and when each window began (ms)."""

    window_keys: tuple[str, ...]
    windows_began: tuple[int, ...]


def window_key(client: str, scope: str, window: Window) -> str:
    """The hash counting ``client``'s slots of ``scope`` in ``window``."""
    return keys.rate_limit_window(client, scope, window.limit, window.name)


def reserve_slot(r: redis.Redis, windows: Sequence[Window], scope: str, client: str) -> Slot | None:
    """Atomically take a slot for ``client`` in every one of ``windows``, or none: None when
    one is full. Taking it before the attempt, not counting after, is what keeps attempts
    arriving together within the limit. One round trip."""
    slots = reserve_slots(r, [(windows, scope, client)])
    return slots[0] if slots else None


def window_request(
    windows: Sequence[Window], scope: str, client: str
) -> tuple[tuple[str, ...], list[int]]:
    """What a script taking a slot of ``client``'s ``scope`` in ``windows`` is given: the
    windows' keys, and each one's limit and length in ms (see scripts.RESERVE_SLOT)."""
    return (
        tuple(window_key(client, scope, window) for window in windows),
        [value for window in windows for value in (window.limit, window.seconds * 1000)],
    )


def reserve_slots(
    r: redis.Redis, limits: Sequence[tuple[Sequence[Window], str, str]]
) -> list[Slot] | None:
    """A slot in each of ``limits`` (windows, scope, client), all taken in one round trip
    (each client's windows atomically, under its own hash tag), or None when one is full:
    then the others taken are given back."""
    return _take_slots(r, limits)[0]


def reserve_slot_and_read(
    r: redis.Redis, windows: Sequence[Window], scope: str, client: str, read: Callable
) -> tuple[Slot | None, object]:
    """``reserve_slot``, with ``read`` (which queues one command that changes nothing) sent
    after it in the same round trip; the slot (None when a window is full) and the read's
    answer."""
    slots, (answer,) = _take_slots(r, [(windows, scope, client)], read)
    return (slots[0] if slots else None), answer


def _take_slots(
    r: redis.Redis, limits: Sequence[tuple[Sequence[Window], str, str]], read=None
) -> tuple[list[Slot] | None, list]:
    now = int(clock() * 1000)
    requests = [window_request(*limit) for limit in limits]

    def queue(pipe):
        for window_keys, args in requests:
            RESERVE_SLOT.queue(pipe, window_keys, [now, *args])
        if read:
            read(pipe)

    answers = execute_pipeline(r, queue)
    slots = [
        Slot(window_keys, tuple(began))
        for (window_keys, _), began in zip(requests, answers, strict=False)
        if began
    ]
    read_answers = answers[len(requests) :]
    if len(slots) == len(requests):
        return slots, read_answers
    for slot in slots:
        give_back_slot(r, slot)
    return None, read_answers


def give_back_slot(r: redis.Redis, slot: Slot) -> None:
    """Return a slot that turned out not to be needed (the attempt did not count)."""
    execute_pipeline(r, lambda pipe: queue_give_back_slot(pipe, slot))


def queue_give_back_slot(pipe, slot: Slot) -> None:
    """Queue the return of ``slot`` (see give_back_slot), in another write's round trip."""
    GIVE_BACK_SLOT.queue(pipe, slot.window_keys, slot.windows_began)


def queue_slots_taken(pipe, window: Window, scope: str, client: str) -> None:
    """Queue the read of ``window``'s hash of ``client``'s ``scope`` (see slots_taken)."""
    pipe.hmget(window_key(client, scope, window), "count", "started")


def slots_taken(window: Window, stored: Sequence[str | None]) -> int:
    """How many slots ``window`` holds now, from its hash as queue_slots_taken read it."""
    count, started = stored
    ended = not started or int(started) + window.seconds * 1000 <= int(clock() * 1000)
    return 0 if ended or not count else int(count)
