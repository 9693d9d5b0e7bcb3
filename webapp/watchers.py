"""Event streams of replies being written, held in check so they can't starve the server.

A stream holds a thread for as long as its reply is written. Each process serves streams
on threads of their own, at most STREAMS_PER_PROCESS at once, so they never take the
threads pages are served on; and one owner holds at most STREAMS_PER_OWNER at once, across
every process. An owner's count is a lease per stream in Redis, renewed as the stream goes,
so a stream whose process died stops counting when its lease runs out. A stream refused
either way gets 429 at once: the page then falls back to refreshing itself until the reply
is done.
"""

import secrets
import threading
import time

import redis

from webapp.storage import WATCH_BLOCK_MS, keys
from webapp.storage.scripts import OPEN_WATCH

clock = time.time
"""The clock leases are measured with, in seconds. A module attribute, so that a test can
move it on past a lease."""

LEASE_SECONDS = 3 * WATCH_BLOCK_MS / 1000
"""How long a stream counts toward its owner's streams without being renewed (it is renewed
at least every WATCH_BLOCK_MS: after each wait for news, and as events go)."""


class TooManyStreams(Exception):
    """The owner, or this process, has as many streams open as allowed."""


class Watch:
    """One open stream: renew it as it goes, close it when it ends."""

    def __init__(self, r: redis.Redis, owner: str, release: threading.Semaphore) -> None:
        self._r, self._key, self._release = r, keys.owner_watchers(owner), release
        self.id = secrets.token_urlsafe(9)
        self._renewed_at = clock()
        self._closed = False

    def renew(self) -> None:
        """Keep counting this stream (written at most every third of a lease)."""
        now = clock()
        if now - self._renewed_at < LEASE_SECONDS / 3:
            return
        self._renewed_at = now
        pipe = self._r.pipeline(transaction=False)
        pipe.zadd(self._key, {self.id: now + LEASE_SECONDS})
        pipe.expire(self._key, int(LEASE_SECONDS) + 1)
        pipe.execute()

    def close(self) -> None:
        """The stream ended: it counts no more (once, however often called)."""
        if self._closed:
            return
        self._closed = True
        self._release.release()
        self._r.zrem(self._key, self.id)


class Watchers:
    """This process's streams, and each owner's across processes."""

    def __init__(self, r: redis.Redis, *, per_owner: int, per_process: int) -> None:
        self._r, self._per_owner = r, per_owner
        self._slots = threading.BoundedSemaphore(per_process)

    def open(self, owner: str) -> Watch:
        """A stream for ``owner``, or TooManyStreams (nothing held)."""
        if not self._slots.acquire(blocking=False):
            raise TooManyStreams
        watch = Watch(self._r, owner, self._slots)
        try:
            leased = OPEN_WATCH.run(
                self._r,
                [keys.owner_watchers(owner)],
                [clock(), LEASE_SECONDS, self._per_owner, watch.id],
            )
        except Exception:
            self._slots.release()
            raise
        if not leased:
            self._slots.release()
            raise TooManyStreams
        return watch
