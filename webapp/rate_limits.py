"""Rate limits, kept in Redis, so they hold across workers and instances: Flask-Limiter for
model calls, and slots reserved atomically for failed resume code entries."""

import time
from dataclasses import dataclass

import redis
from flask import Flask, current_app
from flask_limiter import Limiter
from limits import parse, parse_many

from webapp.storage import keys
from webapp.storage.scripts import AtomicScript

limiter = Limiter(key_func=lambda: "", strategy="fixed-window")

clock = time.time
"""The clock the reserved slots' windows are measured with, in seconds. A module attribute,
so that a test can move it on instead of sleeping through minutes and days."""

# KEYS[n]: one window's hash (count, started: when the window began, in ms).
# ARGV[1]: now in ms; ARGV[2n], ARGV[2n+1]: window n's limit and length in ms.
# Takes a slot in every window, or in none when one is full; returns when each began.
RESERVE_SLOT = AtomicScript(
    """
local now = tonumber(ARGV[1])
local windows = {}
for n, key in ipairs(KEYS) do
  local limit, length = tonumber(ARGV[2 * n]), tonumber(ARGV[2 * n + 1])
  local stored = redis.call('HMGET', key, 'count', 'started')
  local count, started = tonumber(stored[1]) or 0, tonumber(stored[2])
  if not started or started + length <= now then
    count, started = 0, now
  end
  if count >= limit then
    return false
  end
  windows[n] = {count + 1, started, started + length - now}
end
local began = {}
for n, key in ipairs(KEYS) do
  redis.call('HSET', key, 'count', windows[n][1], 'started', windows[n][2])
  redis.call('PEXPIRE', key, windows[n][3])
  began[n] = windows[n][2]
end
return began
"""
)

# KEYS[n]: the windows a slot was taken in; ARGV[n]: when window n began then (ms).
# Gives the slot back, except in a window that has begun again since (the slot went with it).
GIVE_BACK_SLOT = AtomicScript(
    """
for n, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'started') == ARGV[n] then
    redis.call('HINCRBY', key, 'count', -1)
  end
end
return 0
"""
)


@dataclass(frozen=True)
class Slot:
    """A slot taken in each window of a limit: their keys, and when each window began (ms)."""

    window_keys: tuple[str, ...]
    windows_began: tuple[int, ...]


def init_app(app: Flask) -> None:
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"key_prefix": keys.RATE_LIMITS_PREFIX})
    limiter.init_app(app)


def allow_model_call(owner: str) -> bool:
    """Count one model call for ``owner``; False once over MODEL_CALLS_PER_MINUTE."""
    per_minute = int(current_app.config["MODEL_CALLS_PER_MINUTE"])
    return limiter.limiter.hit(parse(f"{per_minute}/minute"), "model-calls", owner)


def reserve_slot(r: redis.Redis, limits: str, scope: str, client: str) -> Slot | None:
    """Atomically take a slot for ``client`` in every window of ``limits`` (such as
    "10 per minute;100 per day"), or none: None when a window is full. Taking it before
    the attempt, not counting after, is what keeps attempts arriving together within the
    limit."""
    items = parse_many(limits)
    # Flask-Limiter's layout, with the client as the hash tag: one slot on Redis Cluster.
    window_keys = tuple(
        f"{keys.RATE_LIMITS_PREFIX}:{item.key_for(f'{{{client}}}', scope)}" for item in items
    )
    windows = [value for item in items for value in (item.amount, item.get_expiry() * 1000)]
    began = _evaluate(r, RESERVE_SLOT, window_keys, [int(clock() * 1000), *windows])
    return Slot(window_keys, tuple(began)) if began else None


def give_back_slot(r: redis.Redis, slot: Slot) -> None:
    """Return a slot that turned out not to be needed (the attempt succeeded)."""
    _evaluate(r, GIVE_BACK_SLOT, slot.window_keys, slot.windows_began)


def _evaluate(r: redis.Redis, script: AtomicScript, script_keys, args):
    """Run ``script`` by its SHA, loading it first if the server does not know it yet."""
    try:
        return r.evalsha(script.sha, len(script_keys), *script_keys, *args)
    except redis.exceptions.NoScriptError:
        r.script_load(script.source)
        return r.evalsha(script.sha, len(script_keys), *script_keys, *args)
