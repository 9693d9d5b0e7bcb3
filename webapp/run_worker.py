"""This process's background work: it writes replies in background threads, beats their
heartbeats, reaps stale runs of any process, interrupts its own runs when it stops, and
sweeps what has ended since the last sweep (at start-up and periodically, one process of
the whole deployment per interval: see deadlines.sweep)."""

import atexit
import logging
import os
import threading
import time

import redis

from webapp import deadlines, metrics, runs
from webapp.conversations import Lifetimes
from webapp.llm import Provider
from webapp.runs import Run, RunSettings
from webapp.storage import keys

log = logging.getLogger(__name__)


class RunWorker:
    def __init__(
        self,
        r: redis.Redis,
        provider: Provider,
        lifetimes: Lifetimes,
        settings: RunSettings,
        *,
        threads: int,
        reaper_interval: float,
        sweep_interval: float,
    ) -> None:
        self.r, self.provider, self.lifetimes, self.settings = r, provider, lifetimes, settings
        self.reaper_interval, self.sweep_interval = reaper_interval, sweep_interval
        self.stopping = threading.Event()
        """Set when the process is shutting down: watchers should let go."""
        self._local: dict[str, Run] = {}
        self._lock = threading.Lock()
        # Daemon threads, so that a writer stuck reading from the model never holds up the
        # process's exit (its run is marked interrupted first); at most ``threads`` write.
        self._writers = threading.BoundedSemaphore(threads)
        atexit.register(self.shutdown)

    def start_background(self) -> None:
        """Start the thread that beats heartbeats, reaps and sweeps."""
        threading.Thread(target=self._tick, name="background", daemon=True).start()

    def submit(self, run: Run, prefix: str = "") -> None:
        """Write ``run``'s reply in the background."""
        with self._lock:
            self._local[run.id] = run
        threading.Thread(target=self._write, args=(run, prefix), name="run", daemon=True).start()

    def _write(self, run: Run, prefix: str) -> None:
        try:
            with self._writers:
                runs.write(self.r, self.provider, run, self.lifetimes, self.settings, prefix)
        except Exception:
            # Redis gone mid-reply, or a bug: the run stays "running" until the reaper marks
            # it interrupted, partial text kept, from whichever process sees it first.
            log.exception("run %s of conversation %s failed", run.id, run.conversation_id)
        finally:
            with self._lock:
                self._local.pop(run.id, None)

    def local_runs(self) -> list[Run]:
        with self._lock:
            return list(self._local.values())

    def _tick(self) -> None:
        """Beat heartbeats often; reap and sweep at start-up and at their intervals."""
        due = {self._reap: time.monotonic(), self._sweep: time.monotonic()}
        intervals = {self._reap: self.reaper_interval, self._sweep: self.sweep_interval}
        while not self.stopping.is_set():
            try:
                runs.beat(self.r, self.local_runs(), self.settings)
                for job, when in due.items():
                    if time.monotonic() >= when:
                        job()
                        due[job] = time.monotonic() + intervals[job]
            except redis.exceptions.RedisError as error:
                log.warning("background work skipped: %s", error)
            self.stopping.wait(self.settings.heartbeat_seconds)

    def _reap(self) -> None:
        reaped = runs.reap_stale_runs(self.r, self.lifetimes, self.settings)
        if reaped:
            log.warning("marked %d stale runs interrupted", reaped)

    def _sweep(self) -> bool:
        """Sweep, unless another process (of any instance) has this interval: the first to
        take the interval's lock sweeps for everyone. Whether this one swept."""
        interval_ms = max(1, int(self.sweep_interval * 1000))
        if not self.r.set(keys.SWEEP_LOCK, os.getpid(), nx=True, px=interval_ms):
            return False
        swept = deadlines.sweep(self.r)
        metrics.count_sessions_expired(self.r, swept.sessions_ended)
        return True

    def shutdown(self) -> None:
        """Stop beating and mark this process's running runs interrupted (partial text kept)."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        try:
            runs.interrupt_runs(self.r, self.local_runs(), self.lifetimes, self.settings)
        except redis.exceptions.RedisError as error:
            log.warning("could not mark runs interrupted at shutdown (the reaper will): %s", error)
