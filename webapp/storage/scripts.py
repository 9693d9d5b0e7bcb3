"""Lua scripts: each one atomic operation, registered once, run by its SHA.

Scripts run through EVALSHA directly (not redis-py's ``Script`` helper, which
adds a SCRIPT EXISTS round trip to every pipeline); a NOSCRIPT answer, as after
a server restart, loads every script and runs the pipeline once more.
"""

import hashlib
from collections.abc import Callable, Sequence

import redis


class AtomicScript:
    """One Lua script, addressed by the SHA1 of its source."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def queue(self, pipe: redis.client.Pipeline, keys: Sequence[str], args: Sequence) -> None:
        """Queue one call of this script on a pipeline."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


CONVERSATION_GONE = "GONE conversation does not exist"
"""The error a script answers with when the conversation's meta hash is missing."""

APPEND_MESSAGE_AND_TOUCH = AtomicScript(
    """
-- Appends one message unless its id is among the newest ones, and slides every
-- TTL of the conversation together.
-- KEYS[1] meta hash, KEYS[2] messages list, KEYS[3] session hash, KEYS[4] recent ids list
-- ARGV[1] message id, ARGV[2] message JSON
-- ARGV[3] title to set if the conversation has none yet ("" for none)
-- ARGV[4] session idle seconds, ARGV[5] session max seconds,
-- ARGV[6] transcript retention seconds, ARGV[7] how many newest ids to remember
-- Returns {1 if stored else 0, message count}; error CONVERSATION_GONE if the conversation
-- does not exist.
local now = tonumber(redis.call('TIME')[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('CONVERSATION_GONE')
end
if redis.call('LPOS', KEYS[4], ARGV[1]) then
  return {0, redis.call('LLEN', KEYS[2])}
end
local count = redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LPUSH', KEYS[4], ARGV[1])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
redis.call('HSET', KEYS[1], 'updated_at', now, 'message_count', count)
if ARGV[3] ~= '' then
  redis.call('HSETNX', KEYS[1], 'title', ARGV[3])
end
local idle, max_age = tonumber(ARGV[4]), tonumber(ARGV[5])
local started = tonumber(redis.call('HGET', KEYS[3], 'started_at') or '')
if not started or started + max_age <= now then
  started = now
end
local ttl = math.min(idle, started + max_age - now)
redis.call('HSET', KEYS[3], 'started_at', started, 'expires_at', now + ttl)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[4], ARGV[6])
return {1, count}
""".replace("CONVERSATION_GONE", CONVERSATION_GONE)
)

ALL_SCRIPTS = (APPEND_MESSAGE_AND_TOUCH,)


def execute_pipeline(
    client: redis.Redis, queue: Callable[[redis.client.Pipeline], None], *, transaction=False
) -> list:
    """Queue commands with ``queue`` and send them in one round trip, loading scripts if needed."""
    for attempt in range(2):
        pipe = client.pipeline(transaction=transaction)
        queue(pipe)
        try:
            return pipe.execute()
        except redis.exceptions.NoScriptError:
            if attempt:
                raise
            for script in ALL_SCRIPTS:
                client.script_load(script.source)
    raise AssertionError("unreachable")
