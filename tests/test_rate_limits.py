"""Rate limits in Redis: slots taken in every window or none, exact limits, windows that
begin again, slots given back, on fakeredis, the real server and a cluster."""

import threading

import pytest

from webapp import rate_limits
from webapp.rate_limits import DAY, MINUTE, give_back_slot, per_day, per_minute, reserve_slot

CLIENT = "203.0.113.7"
SCOPE = "test-attempts"


class Clock:
    """A clock the test moves on by hand, so that windows of a minute or a day can pass."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(rate_limits, "clock", clock)
    return clock


def take(r, windows, count, scope=SCOPE, client=CLIENT):
    """Reserve ``count`` slots one after the other; how many were granted."""
    return sum(reserve_slot(r, windows, scope, client) is not None for _ in range(count))


@pytest.mark.parametrize("limit", [1, 3, 10])
def test_the_limit_is_exact(redis, clock, limit):
    windows = (per_minute(limit),)
    slots = [reserve_slot(redis, windows, SCOPE, CLIENT) for _ in range(limit)]
    assert all(slot is not None for slot in slots)
    assert reserve_slot(redis, windows, SCOPE, CLIENT) is None
    # Asked again: a refusal must not have reset or overflowed the window.
    assert reserve_slot(redis, windows, SCOPE, CLIENT) is None


@pytest.mark.parametrize("full_first", [True, False], ids=["full-checked-first", "full-last"])
def test_a_full_window_charges_none_of_the_others(redis, clock, full_first):
    """Whichever order the windows are checked in (the script writes only once all pass)."""
    minute, day = per_minute(2), per_day(5)
    windows = (minute, day) if full_first else (day, minute)
    assert take(redis, windows, 2) == 2
    assert take(redis, windows, 3) == 0
    # The day window holds only the two granted slots: three more fit on their own. Had the
    # refused attempts been charged there, it would already be full.
    assert take(redis, (day,), 3) == 3
    assert reserve_slot(redis, (day,), SCOPE, CLIENT) is None


@pytest.mark.parametrize(("window", "length"), [(per_minute(2), MINUTE), (per_day(2), DAY)])
def test_a_window_begins_again_after_its_length(redis, clock, window, length):
    assert reserve_slot(redis, (window,), SCOPE, CLIENT) is not None
    clock.advance(length // 2)
    assert reserve_slot(redis, (window,), SCOPE, CLIENT) is not None
    assert reserve_slot(redis, (window,), SCOPE, CLIENT) is None
    # The window began at its first slot, not at the last one nor at a round time. (Whole
    # seconds: the clock is a float, and a fraction could round either side of the end.)
    clock.advance(length // 2 - 1)
    assert reserve_slot(redis, (window,), SCOPE, CLIENT) is None
    clock.advance(1)
    assert take(redis, (window,), 3) == 2


def test_a_window_is_kept_only_for_the_rest_of_its_length(redis, clock):
    """Redis forgets a window when it ends, so limits never accumulate keys."""
    window = per_minute(5)
    reserve_slot(redis, (window,), SCOPE, CLIENT)
    clock.advance(20)
    reserve_slot(redis, (window,), SCOPE, CLIENT)
    ttl_ms = redis.pttl(rate_limits.window_key(CLIENT, SCOPE, window))
    assert 39_000 < ttl_ms <= 40_000


def test_a_slot_given_back_can_be_taken_again(redis, clock):
    windows = (per_minute(2), per_day(3))
    first = reserve_slot(redis, windows, SCOPE, CLIENT)
    assert take(redis, windows, 2) == 1
    give_back_slot(redis, first)
    # Exactly one slot was freed, in every window of the limit.
    assert take(redis, windows, 2) == 1
    clock.advance(MINUTE)
    assert take(redis, windows, 2) == 1


def test_a_slot_is_not_given_back_into_a_window_begun_again_since(redis, clock):
    minute, day = per_minute(1), per_day(2)
    old = reserve_slot(redis, (minute, day), SCOPE, CLIENT)
    clock.advance(MINUTE)
    assert reserve_slot(redis, (minute, day), SCOPE, CLIENT) is not None
    give_back_slot(redis, old)
    # The old slot went with its minute window, so the new minute stays full...
    assert reserve_slot(redis, (minute, day), SCOPE, CLIENT) is None
    # ...while the day window, which has not begun again, got it back: one more fits there.
    clock.advance(MINUTE)
    assert reserve_slot(redis, (minute, day), SCOPE, CLIENT) is not None
    clock.advance(MINUTE)
    assert reserve_slot(redis, (minute, day), SCOPE, CLIENT) is None


def test_clients_and_scopes_are_limited_independently(redis, clock):
    windows = (per_minute(1),)
    assert reserve_slot(redis, windows, SCOPE, CLIENT) is not None
    assert reserve_slot(redis, windows, SCOPE, "198.51.100.2") is not None
    assert reserve_slot(redis, windows, "other-attempts", CLIENT) is not None
    assert reserve_slot(redis, windows, SCOPE, CLIENT) is None
    assert reserve_slot(redis, windows, SCOPE, "198.51.100.2") is None
    assert reserve_slot(redis, windows, "other-attempts", CLIENT) is None


def test_giving_back_frees_only_that_clients_slot(redis, clock):
    windows = (per_minute(1),)
    mine = reserve_slot(redis, windows, SCOPE, CLIENT)
    reserve_slot(redis, windows, SCOPE, "198.51.100.2")
    give_back_slot(redis, mine)
    assert reserve_slot(redis, windows, SCOPE, "198.51.100.2") is None
    assert reserve_slot(redis, windows, SCOPE, CLIENT) is not None


def reserve_together(r, windows, attempts):
    """Make ``attempts`` reservations at once, from as many threads; how many were granted."""
    start = threading.Barrier(attempts)
    granted = []

    def attempt():
        start.wait()
        granted.append(reserve_slot(r, windows, SCOPE, CLIENT))

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(slot is not None for slot in granted)


def test_reservations_arriving_together_never_exceed_the_limit(real_redis, clock):
    windows = (per_minute(5), per_day(8))
    assert reserve_together(real_redis, windows, 32) == 5
    # The 27 refused ones were not charged to the day window: three of it are left.
    clock.advance(MINUTE)
    assert reserve_together(real_redis, windows, 32) == 3


def test_slots_of_several_clients_are_all_taken_or_none(redis, clock):
    """A guest's model call takes a slot of its own and one of its address's, in one round
    trip: when the address is full, the guest's slot is given back, not used up."""
    windows = (per_minute(2),)
    assert take(redis, windows, 1, client="198.51.100.1") == 1
    assert rate_limits.reserve_slots(
        redis, [(windows, SCOPE, "guest:a"), (windows, SCOPE, "198.51.100.1")]
    )
    full = rate_limits.reserve_slots(
        redis, [(windows, SCOPE, "guest:a"), (windows, SCOPE, "198.51.100.1")]
    )
    assert full is None  # the address has had its two
    assert reserve_slot(redis, windows, SCOPE, "guest:a") is not None  # one left, not zero
    assert reserve_slot(redis, windows, SCOPE, "guest:a") is None
