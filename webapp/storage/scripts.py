"""Lua scripts: each one atomic operation, registered once, run by its SHA.

Scripts run through EVALSHA directly (not redis-py's ``Script`` helper, which
adds a SCRIPT EXISTS round trip to every pipeline); a NOSCRIPT answer, as after
a server restart or a failover (a replica is not sent the scripts), loads every
script (on every master of a cluster) and sends the commands so answered once
more.

On Redis Cluster. Every script's keys share one hash tag (one conversation's, one
code's, or one hash), so every script runs on a cluster and stays atomic there:
all that one script does to one conversation happens at once or not at all. What
a pipeline does beyond one hash tag is not atomic on a cluster: the client sends
each master its share, and one master can fail while another succeeds. Those
second steps, and what happens when one is lost:

- Creating a conversation lists it in its owner's index ({owner}): if that is
  lost, the owner's list misses it (its link, the console and its retention
  still work).
- Every write that refreshes a conversation (appending, starting or ending a run,
  catching up, touching, parking, resuming) refreshes its owner index's TTL, and
  its score when it is activity, after the script in the same round trip
  (``conversations.queue_indexes``): if lost, the list's order lags until the
  next write, and the index's TTL is set again by it.
- Starting a run adds it to the index of running runs: if lost, anyone who
  looks at the conversation ends the run once its heartbeat is stale
  (``runs.seen_run``), and ``resume-chat repair`` lists it again from the run's
  own hash for the reaper. Ending a run removes it; the reaper drops members whose run
  has ended or gone.
- Giving a conversation to another owner moves its index entries only after
  its script said it changed hands (RESUME_PARKED_SESSION, when a guest's code
  is redeemed elsewhere); moving a guest's conversations on login
  changes each owner in its own script, then the indexes (removing only the
  entries moved, so one created meanwhile stays listed). If an index step is
  lost, an old owner's entry is skipped by the list (it checks the owner) and
  removed by the sweep once the conversation is gone; a new owner's missing
  entry leaves the conversation unlisted.
- A resume code's hash ({code hash}) and the session it parks are two scripts in
  two round trips on one server too: redeeming consumes the code, then resumes
  the session only if it is parked under that code (and gives the conversation
  to its redeemer in the same script), then moves its index entries (on one
  server inside that script: RESUME_AND_SETTLE); issuing
  writes the code, then parks, then retires the old code. A code left without its session is
  refused (used or expired) and expires with its TTL.
- Deleting (the owner's Delete, the console's clearing) deletes each
  conversation in one script over its own keys, which answers with the resume
  codes listed with it; then its codes, its index entry and its running-run
  entries go: what is left over is swept, reaped, or expires (a code left
  without its conversation is refused as expired).
- Every write that moves a deadline (a conversation created, refreshed, given
  away; its session slid, parked, resumed, started again) mirrors it into the
  deadline sets ({deadlines}) after its script, in the same round trip
  (MIRROR_DEADLINES; on one server inside the write's own script with the
  owner index's step, see AtomicScript); deleting removes it from them
  afterwards. If lost, a count by state is wrong for that conversation until the
  sweep sees its mirrored deadline pass (it then reads the truth), or until
  ``resume-chat repair``.
- Counters (one hash) and their hourly buckets are separate increments.
"""

import hashlib
import re
from collections.abc import Callable, Sequence

import redis
from redis.cluster import RedisCluster

from webapp.storage import REPLICA_WAIT_MS, replicas_to_confirm

CONVERSATION_GONE = "RC_GONE"
"""A script's refusal: the conversation's meta hash is missing."""
RUN_IN_PROGRESS = "RC_RUN_IN_PROGRESS"
"""START_RUN's refusal while the conversation's latest run is running."""
SESSION_EXPIRED = "RC_SESSION_EXPIRED"
"""START_RUN's refusal when the conversation has no live session."""

_REFUSAL = re.compile(r"(?:^|caused error: )(RC_[A-Z_]+)\b")
"""A refusal as Redis answers it, alone or annotated by a pipeline (``... caused error: RC_GONE``).
The ``RC_`` prefix keeps refusals apart from Redis' own errors (``BUSY``, ``NOSCRIPT``...)."""
_DOMAIN_EXCEPTIONS: dict[str, type[Exception]] = {}


def refusal(code: str):
    """Class decorator: the domain exception that a script's refusal ``code`` is raised as."""

    def register(exception: type[Exception]) -> type[Exception]:
        _DOMAIN_EXCEPTIONS[code] = exception
        return exception

    return register


def as_domain_error(error: Exception) -> Exception:
    """The domain exception of a script's refusal (see ``refusal``), else ``error`` itself."""
    found = (
        _REFUSAL.search(str(error)) if isinstance(error, redis.exceptions.ResponseError) else None
    )
    exception = _DOMAIN_EXCEPTIONS.get(found[1]) if found else None
    return exception(str(error)) if exception else error


_OWNER_INDEX_FUNCTION = """
-- Keeps an owner's index of conversations in step with one write to one of them: the
-- conversation's score becomes the write's time if it was activity ("" keeps its score),
-- and the index lives at least ``seconds`` more.
local function touch_owner_index(index, id, score, seconds)
  if score ~= '' then redis.call('ZADD', index, score, id) end
  -- GT leaves an index without a TTL alone (as if it never ended): NX gives it one.
  if redis.call('EXPIRE', index, seconds, 'GT') == 0 then
    redis.call('EXPIRE', index, seconds, 'NX')
  end
end
"""

_MIRROR_FUNCTION = """
-- mirror_deadlines(K, A, slid) keeps the deadline mirrors (see deadlines) in step with one
-- write to a conversation. What the write did to the session is said by A[3]; a session is
-- slid, restarted or parked only if its mirror says it is live, and started only if it
-- says it has ended, as the write's script checks it. Where the write's own script runs
-- first in the same script (one server, see with_indexes), ``slid`` says what it did to
-- the session (see slide_session), and a slide is mirrored from that without reading the
-- mirrors: the conversation is there, and its session's new end known; a write that slid
-- nothing (a repeated message, a session gone) mirrors nothing.
-- K[1] conversations (id -> transcript end), K[2] owners (id -> owner),
-- K[3] sessions (id -> session end), K[4] session caps (id -> end of its maximum age),
-- K[5] parked (id -> end of the parking)
-- A[1] conversation id, A[2] owner, A[3] the write:
--   "new"       created, its session begun
--   "kept"      its transcript refreshed, its session untouched
--   "moved"     given to A[2], nothing refreshed
--   "slid"      its session slid (so no longer parked), and its transcript refreshed
--   "restarted" its session begun a new stretch (resumed), and its transcript refreshed
--   "started"   a new session begun after the last one ended, transcript refreshed
--   "parked"    its session parked for A[7] seconds, its keys kept at least as long
-- A[4] transcript retention, A[5] session idle, A[6] session max age (seconds),
-- A[7] the parking's seconds (0 unless parked)
-- Returns 1 if mirrored, 0 if the conversation's mirror says it is gone (nothing written).
local function mirror_deadlines(K, A, slid)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  local id, write = A[1], A[3]
  local retention, idle, max_age = tonumber(A[4]), tonumber(A[5]), tonumber(A[6])

  local function begin_session()
    redis.call('ZADD', K[4], now + max_age, id)
    redis.call('ZADD', K[3], now + math.min(idle, max_age), id)
    redis.call('ZREM', K[5], id)
  end

  if write == 'new' then
    redis.call('ZADD', K[1], now + retention, id)
    redis.call('HSET', K[2], id, A[2])
    begin_session()
    return 1
  end
  if write == 'slid' and slid then
    if not slid.ttl then return 1 end
    redis.call('ZADD', K[1], now + retention, id)
    redis.call('HSET', K[2], id, A[2])
    if slid.began then redis.call('ZADD', K[4], now + max_age, id) end
    redis.call('ZADD', K[3], now + slid.ttl, id)
    if slid.was_parked then redis.call('ZREM', K[5], id) end
    return 1
  end
  if tonumber(redis.call('ZSCORE', K[1], id) or '0') <= now then return 0 end
  redis.call('HSET', K[2], id, A[2])
  if write == 'moved' then return 1 end
  -- A refresh gives the transcript the retention from now (which may be sooner than a parking
  -- had kept it); parking keeps it at least as long as the parking.
  local parking = tonumber(A[7])
  if write == 'parked' then
    redis.call('ZADD', K[1], 'GT', now + parking, id)
  else
    redis.call('ZADD', K[1], now + retention, id)
  end
  local live = tonumber(redis.call('ZSCORE', K[3], id) or '0') > now
  if write == 'started' and not live then
    begin_session()
  elseif write == 'restarted' and live then
    begin_session()
  elseif write == 'slid' and live then
    -- As the script slides it: a session past its maximum age begins again.
    local cap = tonumber(redis.call('ZSCORE', K[4], id) or '0')
    if cap <= now then
      cap = now + max_age
      redis.call('ZADD', K[4], cap, id)
    end
    redis.call('ZADD', K[3], math.min(now + idle, cap), id)
    redis.call('ZREM', K[5], id)
  elseif write == 'parked' and live then
    redis.call('ZADD', K[3], now + parking, id)
    redis.call('ZADD', K[5], now + parking, id)
  end
  return 1
end
"""

_INDEXES_FUNCTION = """
-- touch_indexes(k, a, slid) does both for one write, where one server holds every key:
-- KEYS[k + 1] the owner's index, KEYS[k + 2..k + 6] the mirrors; ARGV[a + 1..a + 3] as
-- touch_owner_index takes them, ARGV[a + 4..a + 10] as mirror_deadlines takes A (and slid).
local function touch_indexes(k, a, slid)
  touch_owner_index(KEYS[k + 1], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
  return mirror_deadlines(
    {KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6]},
    {ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10]},
    slid
  )
end
"""

INDEX_KEYS, INDEX_ARGUMENTS = 6, 10
"""The keys and arguments touch_indexes takes after a write's own."""


class AtomicScript:
    """One Lua script, addressed by the SHA1 of its source. A write to a conversation made
    ``with_indexes`` also has a second form, ``with_indexes``: the write, then (unless it
    refused) the owner index's and the mirrors' step of TOUCH_INDEXES, in one script, for
    one server (see conversations.queue_indexes)."""

    def __init__(self, source: str, *, with_indexes: bool = False) -> None:
        self.source = source
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        self.with_indexes = AtomicScript(_followed_by_indexes(source)) if with_indexes else None

    def queue(self, pipe: redis.client.Pipeline, keys: Sequence[str], args: Sequence) -> None:
        """Queue one call of this script on a pipeline (a cluster pipeline routes it to the
        master of its keys' slot)."""
        # The same command pipe.evalsha would send; the cluster pipeline blocks that method
        # by name, though it routes EVALSHA by its keys.
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    def run(self, client: redis.Redis, keys: Sequence[str], args: Sequence = ()):
        """Run the script alone, in one round trip: its answer, or its refusal raised as the
        domain exception (see ``execute_pipeline``)."""
        (answer,) = execute_pipeline(client, lambda pipe: self.queue(pipe, keys, args))
        return answer


def _as_write(source: str) -> str:
    """A conversation's script with its body (what follows the conversation's functions)
    made a function, ``write()``, for a step that follows it in the same script; the index
    and mirror functions come with it."""
    body = source.removeprefix(_CONVERSATION_FUNCTIONS)
    if body == source:
        raise ValueError("a write made a function begins with the conversation's functions")
    return (
        _OWNER_INDEX_FUNCTION
        + _MIRROR_FUNCTION
        + _INDEXES_FUNCTION
        + _CONVERSATION_FUNCTIONS
        + "local function write()\n"
        + body
        + "\nend\n"
    )


def _followed_by_indexes(source: str) -> str:
    """A write's form with_indexes: the write, then the indexes' step, which mirrors a slide
    from what slide_session did."""
    return _as_write(source) + (
        f"""-- The write above, then the indexes' step unless the write refused.
-- KEYS the write's, then the owner's index and the mirrors ({INDEX_KEYS})
-- ARGV the write's, then the indexes' ({INDEX_ARGUMENTS}), as touch_indexes takes them
-- Returns the write's answer.
local answer = write()
if type(answer) == 'table' and answer.err then return answer end
touch_indexes(#KEYS - {INDEX_KEYS}, #ARGV - {INDEX_ARGUMENTS}, slid)
return answer
"""
    )


# Shared by the scripts below. A conversation's keys are always KEYS[1..8], in the order of
# keys.conversation_keys; these names say which is which.
_CONVERSATION_FUNCTIONS = """
local META, MESSAGES, SESSION, RECENT_IDS, DRAFT, RUN, CODES, RUNS = 1, 2, 3, 4, 5, 6, 7, 8

local function now_seconds()
  local t = redis.call('TIME')
  return tonumber(t[1]), tonumber(t[1]) + tonumber(t[2]) / 1e6
end

-- What slide_session did, for the deadline mirror in the same script (with_indexes): the
-- session's new TTL, whether it began again, whether it was parked.
local slid = {}

-- Slide the session: idle time from now, capped by the maximum age from its start. A user
-- acting ends any parking: the resume code of the parked session is withdrawn with it.
local function slide_session(now, idle, max_age)
  local session = redis.call('HMGET', KEYS[SESSION], 'started_at', 'code_hash')
  local started = tonumber(session[1] or '')
  local began = not started or started + max_age <= now
  if began then
    started = now
  end
  local ttl = math.min(idle, started + max_age - now)
  if session[2] then  -- parked: the three fields are written and removed together
    redis.call('HDEL', KEYS[SESSION], 'parked_until', 'code_hash', 'code_hint')
  end
  redis.call('HSET', KEYS[SESSION], 'started_at', started, 'expires_at', now + ttl)
  redis.call('EXPIRE', KEYS[SESSION], ttl)
  slid.ttl, slid.began, slid.was_parked = ttl, began, session[2] ~= false
end

-- Give every key of the conversation but its session the retention from now: no key of it
-- outlives or predeceases the others.
local function refresh_transcript(retention)
  for i = 1, RUNS do
    if i ~= SESSION then redis.call('EXPIRE', KEYS[i], retention) end
  end
end

-- Append one message unless its id is among the newest ones. Returns 1 and the message
-- count if stored, else 0.
local function append_message(precise_now, id, json, title, window)
  if redis.call('LPOS', KEYS[RECENT_IDS], id) then return 0 end
  local count = redis.call('RPUSH', KEYS[MESSAGES], json)
  if redis.call('LPUSH', KEYS[RECENT_IDS], id) > window then
    redis.call('LTRIM', KEYS[RECENT_IDS], 0, window - 1)
  end
  redis.call('HSET', KEYS[META], 'updated_at', precise_now, 'message_count', count)
  if title ~= '' then
    redis.call('HSETNX', KEYS[META], 'title', title)
  end
  return 1, count
end
"""

APPEND_MESSAGE_AND_TOUCH = AtomicScript(
    _CONVERSATION_FUNCTIONS
    + """
-- Appends one message unless its id is among the newest ones, and slides every
-- TTL of the conversation together.
-- KEYS[1..8] the conversation
-- ARGV[1] message id, ARGV[2] message JSON, ARGV[3] title if the conversation has none ("")
-- ARGV[4] session idle seconds, ARGV[5] session max seconds,
-- ARGV[6] transcript retention seconds, ARGV[7] how many newest ids to remember
-- Returns 1 if stored, 0 if its id was among the newest; refusal RC_GONE.
local now, precise_now = now_seconds()
if redis.call('EXISTS', KEYS[META]) == 0 then
  return redis.error_reply('RC_GONE the conversation does not exist')
end
local stored = append_message(precise_now, ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[7]))
if stored == 1 then
  slide_session(now, tonumber(ARGV[4]), tonumber(ARGV[5]))
  refresh_transcript(ARGV[6])
end
return stored
""",
    with_indexes=True,
)

START_RUN = AtomicScript(
    _CONVERSATION_FUNCTIONS
    + """
-- Starts a run that will write a reply, after appending the user's message if one is
-- given, or a catch-up (ARGV[13]) of a conversation whose session has ended; refuses while
-- the conversation's latest run is still running.
-- KEYS[1..8] the conversation, KEYS[9] the new run's events stream
-- ARGV[1] run id, ARGV[2] user message id ("" for none: Continue or Retry),
-- ARGV[3] user message JSON, ARGV[4] title if none yet (""),
-- ARGV[5] session idle seconds, ARGV[6] session max seconds, ARGV[7] retention seconds,
-- ARGV[8] how many newest ids to remember,
-- ARGV[9] id of the message the reply will be stored as (a new id, or the one it replaces),
-- ARGV[10] text the reply starts from ("" unless continuing), ARGV[11] events length cap,
-- ARGV[12] the conversation's owner (kept with the run, for whoever ends it),
-- ARGV[13] its kind: "reply", or "catch_up" (which writes no message, and needs the session
-- to have ended rather than to be alive)
-- Returns 1 if started, 0 if nothing was started (the user message was a repeat, or a
-- session is alive again to catch up in); refusals RC_GONE, RC_SESSION_EXPIRED,
-- RC_RUN_IN_PROGRESS.
local now, precise_now = now_seconds()
if redis.call('EXISTS', KEYS[META]) == 0 then
  return redis.error_reply('RC_GONE the conversation does not exist')
end
if redis.call('HGET', KEYS[RUN], 'id') == ARGV[1] then
  return 1  -- this very call, sent again after its answer was lost: it has started
end
local catching_up = ARGV[13] == 'catch_up'
if catching_up then
  if redis.call('EXISTS', KEYS[SESSION]) == 1 then return 0 end
elseif redis.call('EXISTS', KEYS[SESSION]) == 0 then
  return redis.error_reply('RC_SESSION_EXPIRED the session has expired')
end
if redis.call('HGET', KEYS[RUN], 'status') == 'running' then
  return redis.error_reply('RC_RUN_IN_PROGRESS a reply is still being written')
end
if ARGV[2] ~= '' then
  local stored = append_message(precise_now, ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[8]))
  if stored == 0 then return 0 end
  redis.call('DEL', KEYS[DRAFT])
end
redis.call('DEL', KEYS[RUN])
redis.call('HSET', KEYS[RUN], 'id', ARGV[1], 'status', 'running', 'message_id', ARGV[9],
  'owner', ARGV[12], 'kind', ARGV[13], 'started_at', precise_now, 'heartbeat_at', precise_now)
redis.call('HSET', KEYS[META], 'updated_at', precise_now)
-- The runs whose events may still exist, for deleting them with the conversation: this one
-- until it ends, ended ones until their events expire.
redis.call('ZREMRANGEBYSCORE', KEYS[RUNS], '-inf', now)
redis.call('ZADD', KEYS[RUNS], '+inf', ARGV[1])
if ARGV[10] ~= '' then
  redis.call('XADD', KEYS[9], 'MAXLEN', ARGV[11], '*', 't', ARGV[10])
  redis.call('EXPIRE', KEYS[9], ARGV[7])
end
if not catching_up then slide_session(now, tonumber(ARGV[5]), tonumber(ARGV[6])) end
refresh_transcript(ARGV[7])
return 1
""",
    with_indexes=True,
)

ADD_RUN_CHUNK = AtomicScript(
    """
-- Appends a chunk of the reply to the run's events and beats its heartbeat, only while
-- that run is still the conversation's running run.
-- KEYS[1] the conversation's run hash, KEYS[2] the run's events stream
-- ARGV[1] run id, ARGV[2] text ("" for a heartbeat only), ARGV[3] events length cap,
-- ARGV[4] this chunk's id: a chunk sent again after its answer was lost is written once
-- (the writer waits for each chunk before the next, so the last id is enough),
-- ARGV[5] what the writer is doing, if that changed ("thinking"; "" for no change): kept
-- with the run and told to watchers as a {p: phase} event
-- Returns 1 if the run is still running, else 0 (it was stopped or interrupted).
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1]
   or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
local t = redis.call('TIME')
if (ARGV[2] ~= '' or ARGV[5] ~= '') and redis.call('HGET', KEYS[1], 'last_chunk') ~= ARGV[4] then
  redis.call('HSET', KEYS[1], 'last_chunk', ARGV[4])
  if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], 'phase', ARGV[5])
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'p', ARGV[5])
  end
  if ARGV[2] ~= '' then
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 't', ARGV[2])
  end
  if redis.call('TTL', KEYS[2]) == -1 then
    -- The first chunk made the stream: it lives as long as its run hash.
    redis.call('EXPIRE', KEYS[2], redis.call('TTL', KEYS[1]))
  end
end
redis.call('HSET', KEYS[1], 'heartbeat_at', tonumber(t[1]) + tonumber(t[2]) / 1e6)
return 1
"""
)

FINISH_RUN = AtomicScript(
    _CONVERSATION_FUNCTIONS
    + """
-- Ends a running run once: stores the text written so far as the reply message (replacing
-- the message it continues or retries when that one is the newest), records the status,
-- and appends the end event that tells watchers.
-- KEYS[1..8] the conversation, KEYS[9] the run's events stream
-- ARGV[1] run id, ARGV[2] status (done, stopped, interrupted, failed),
-- ARGV[3] error kind (""), ARGV[4] error message (""), ARGV[5] request id (""),
-- ARGV[6] only if the heartbeat is older than this time (0: unconditionally),
-- ARGV[7] transcript retention seconds, ARGV[8] events TTL after the end,
-- ARGV[9] how many newest ids to remember, ARGV[10] the model that wrote it (""),
-- ARGV[11], ARGV[12], ARGV[13], ARGV[14] the tokens it was billed for: input, cache write,
-- cache read, output (added to the conversation's totals; the prompt's also kept with a
-- live session, as the size of its context the next reply is measured by)
-- A catch-up run (kind "catch_up") stores no message: its summary is a note of its own.
-- Returns 1 if this call ended the run, 0 if it had already ended.
if redis.call('HGET', KEYS[RUN], 'id') ~= ARGV[1]
   or redis.call('HGET', KEYS[RUN], 'status') ~= 'running' then
  return 0
end
local stale_before = tonumber(ARGV[6])
if stale_before > 0
   and tonumber(redis.call('HGET', KEYS[RUN], 'heartbeat_at')) >= stale_before then
  return 0
end
local now, precise_now = now_seconds()
local parts = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[9], '-', '+')) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 't' then parts[#parts + 1] = fields[i + 1] end
  end
end
local text = table.concat(parts)
-- Only text with something in it is a reply: white space alone is no message to send back.
if text:match('%S') and redis.call('HGET', KEYS[RUN], 'kind') ~= 'catch_up' then
  local message_id = redis.call('HGET', KEYS[RUN], 'message_id')
  local message = {id = message_id, role = 'assistant', content = text, created_at = precise_now}
  if ARGV[2] ~= 'done' then message.status = ARGV[2] end
  local json = cjson.encode(message)
  local last = redis.call('LINDEX', KEYS[MESSAGES], -1)
  if last and cjson.decode(last).id == message_id then
    redis.call('LSET', KEYS[MESSAGES], -1, json)
  else
    append_message(precise_now, message_id, json, '', tonumber(ARGV[9]))
  end
end
redis.call('HSET', KEYS[META], 'updated_at', precise_now)
redis.call('HSET', KEYS[RUN], 'status', ARGV[2], 'finished_at', precise_now,
  'error_kind', ARGV[3], 'error_message', ARGV[4], 'request_id', ARGV[5], 'model', ARGV[10],
  'input_tokens', ARGV[11], 'cache_write_tokens', ARGV[12], 'cache_read_tokens', ARGV[13],
  'output_tokens', ARGV[14])
local token_fields = {'input_tokens', 'cache_write_tokens', 'cache_read_tokens', 'output_tokens'}
for i, field in ipairs(token_fields) do
  local tokens = tonumber(ARGV[10 + i])
  if tokens > 0 then redis.call('HINCRBY', KEYS[META], field, tokens) end
end
-- The prompt's size (thinking is never sent back): the messages before the reply, whose own
-- text the next reply's measure estimates.
local prompt = tonumber(ARGV[11]) + tonumber(ARGV[12]) + tonumber(ARGV[13])
if prompt > 0 and redis.call('EXISTS', KEYS[SESSION]) == 1 then
  local count = redis.call('LLEN', KEYS[MESSAGES])
  local last = redis.call('LINDEX', KEYS[MESSAGES], -1)
  local reply_stored = last and cjson.decode(last).id == redis.call('HGET', KEYS[RUN], 'message_id')
  redis.call('HSET', KEYS[SESSION], 'context_tokens', prompt,
    'context_tokens_through', reply_stored and count - 1 or count)
end
redis.call('XADD', KEYS[9], '*', 'status', ARGV[2], 'error_kind', ARGV[3])
redis.call('ZADD', KEYS[RUNS], now + tonumber(ARGV[8]), ARGV[1])
refresh_transcript(ARGV[7])
redis.call('EXPIRE', KEYS[9], ARGV[8])
return 1
""",
    with_indexes=True,
)

START_SESSION_FROM_NOTE = AtomicScript(
    _CONVERSATION_FUNCTIONS
    + """
-- Starts a new session of an expired conversation from a note (a summary of what came
-- before): the note is appended to the transcript, where the page shows it as a divider,
-- and the session's context begins at it. Does nothing if a session is alive.
-- KEYS[1..8] the conversation
-- ARGV[1] note id, ARGV[2] note JSON, ARGV[3] session idle seconds,
-- ARGV[4] session max seconds, ARGV[5] retention seconds, ARGV[6] how many ids to remember
-- Returns 1 if the session started, 0 if one was alive; refusal RC_GONE.
local now, precise_now = now_seconds()
if redis.call('EXISTS', KEYS[META]) == 0 then
  return redis.error_reply('RC_GONE the conversation does not exist')
end
if redis.call('EXISTS', KEYS[SESSION]) == 1 then return 0 end
redis.call('HDEL', KEYS[META], 'session_ended', 'returned_after_expiry')
local _, count = append_message(precise_now, ARGV[1], ARGV[2], '', tonumber(ARGV[6]))
count = count or redis.call('LLEN', KEYS[MESSAGES])  -- the note was already stored
redis.call('HSET', KEYS[SESSION], 'context_from', count - 1)
slide_session(now, tonumber(ARGV[3]), tonumber(ARGV[4]))
refresh_transcript(ARGV[5])
return 1
""",
    with_indexes=True,
)

NOTE_RETURN_AFTER_EXPIRY = AtomicScript(
    _CONVERSATION_FUNCTIONS
    + """
-- Notes that the owner came back to a conversation whose session has ended (its key gone,
-- or past its end and not yet removed), once for each ended session (a new session, from
-- catching up, clears the mark).
-- KEYS[1..8] the conversation
-- Returns 1 the first time after its session ended, else 0.
local _, precise_now = now_seconds()
local ends = tonumber(redis.call('HGET', KEYS[SESSION], 'expires_at') or '0')
if redis.call('EXISTS', KEYS[META]) == 0 or ends > precise_now then
  return 0
end
return redis.call('HSETNX', KEYS[META], 'returned_after_expiry', 1)
"""
)

SAVE_DRAFT = AtomicScript(
    """
-- Keeps (or, given "", forgets) the text being typed in a conversation, for as long as
-- the conversation is kept.
-- KEYS[1] the conversation's meta hash, KEYS[2] its draft
-- ARGV[1] the text
-- Returns 1 if kept, 0 if the conversation is gone.
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then return 0 end
if ARGV[1] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ttl)
end
return 1
"""
)

UPDATE_IF_EXISTS = AtomicScript(
    """
-- Sets fields of a hash only while it exists (never recreating an expired one without
-- its TTL).
-- KEYS[1] the hash; ARGV field, value, field, value...
-- Returns 1 if set, 0 if the hash is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
)

PARK_SESSION = AtomicScript(
    _CONVERSATION_FUNCTIONS
    + """
-- Parks a live session under a new resume code: the session is frozen (it no longer
-- slides) until the code expires, and the rest of the conversation is kept at least as
-- long. The code is listed with the conversation, to be deleted with it.
-- KEYS[1..8] the conversation
-- ARGV[1] the code's keyed hash, ARGV[2] its hint (first group), ARGV[3] code TTL seconds
-- Returns the hash of the code it replaces ("" for none), or false if the session is gone.
-- Sent again after its answer was lost, it finds its own code: that replaces nothing.
if redis.call('EXISTS', KEYS[SESSION]) == 0 then return false end
local now = now_seconds()
local ttl = tonumber(ARGV[3])
local replaced = redis.call('HGET', KEYS[SESSION], 'code_hash') or ''
if replaced == ARGV[1] then replaced = '' end
redis.call('HSET', KEYS[SESSION], 'parked_until', now + ttl, 'expires_at', now + ttl,
  'code_hash', ARGV[1], 'code_hint', ARGV[2])
redis.call('EXPIRE', KEYS[SESSION], ttl)
redis.call('SADD', KEYS[CODES], ARGV[1])
redis.call('EXPIRE', KEYS[CODES], redis.call('TTL', KEYS[META]))
for i = 1, RUNS do
  if i ~= SESSION and redis.call('TTL', KEYS[i]) < ttl then redis.call('EXPIRE', KEYS[i], ttl) end
end
return replaced
""",
    with_indexes=True,
)

RESUME_PARKED_SESSION = AtomicScript(
    _CONVERSATION_FUNCTIONS
    + """
-- Brings a parked session back, whole and sliding again, if it is parked under this code,
-- and gives the conversation to the one who redeemed it if that is another owner. This is
-- what uses a code once: the session is no longer parked under it. The session keeps the
-- code it was resumed with, so that the same redemption sent again (its answer lost) is
-- told it happened, not that the code was used.
-- KEYS[1..8] the conversation
-- ARGV[1] the code's keyed hash, ARGV[2] session idle seconds, ARGV[3] session max seconds,
-- ARGV[4] retention seconds, ARGV[5] the owner it has, ARGV[6] the owner it gets
-- Returns {1, 1 if it changed hands else 0} if resumed; {2, the same} if this code resumed
-- it already for the owner it gets; {0, 0} if it is parked under another code or no longer
-- parked; {-1, 0} if the session is gone.
if redis.call('EXISTS', KEYS[SESSION]) == 0 then return {-1, 0} end
local session = redis.call('HMGET', KEYS[SESSION], 'code_hash', 'resumed_with')
if session[1] ~= ARGV[1] then
  if session[2] == ARGV[1] and redis.call('HGET', KEYS[META], 'owner') == ARGV[6] then
    return {2, ARGV[6] ~= ARGV[5] and 1 or 0}
  end
  return {0, 0}
end
local now = now_seconds()
-- A new stretch of the same session.
redis.call('HSET', KEYS[SESSION], 'started_at', now, 'resumed_with', ARGV[1])
slide_session(now, tonumber(ARGV[2]), tonumber(ARGV[3]))
refresh_transcript(ARGV[4])
if ARGV[6] ~= ARGV[5] and redis.call('HGET', KEYS[META], 'owner') == ARGV[5] then
  redis.call('HSET', KEYS[META], 'owner', ARGV[6])
  return {1, 1}
end
return {1, 0}
"""
)

RESUME_AND_SETTLE = AtomicScript(
    _as_write(RESUME_PARKED_SESSION.source)
    + """
-- RESUME_PARKED_SESSION, then, if it resumed (not if it had: that run settled it), what
-- settles the redemption, in one script where one server holds every key (a cluster sends
-- the settling in a second round trip): the conversation leaves the old owner's index for
-- the new one's if it changed hands (else its entry is kept, its TTL refreshed), its
-- deadlines are mirrored as a session begun a new stretch, and the redemption is counted.
-- KEYS[1..8] the conversation, KEYS[9] the index of the owner it had, KEYS[10] the index of
-- the owner it may get, KEYS[11..15] the mirrors (see mirror_deadlines), KEYS[16] counters
-- ARGV[1..6] as RESUME_PARKED_SESSION takes them, ARGV[7] the conversation id, ARGV[8] now
-- (its score in a new owner's index), ARGV[9] the index's seconds, ARGV[10] the counter
-- Returns RESUME_PARKED_SESSION's answer.
local answer = write()
if answer[1] ~= 1 then return answer end
local id, moved = ARGV[7], answer[2] == 1
if moved then
  redis.call('ZREM', KEYS[9], id)
  touch_owner_index(KEYS[10], id, ARGV[8], ARGV[9])
else
  touch_owner_index(KEYS[9], id, '', ARGV[9])
end
mirror_deadlines(
  {KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15]},
  {id, moved and ARGV[6] or ARGV[5], 'restarted', ARGV[4], ARGV[2], ARGV[3], 0}
)
redis.call('HINCRBY', KEYS[16], ARGV[10], 1)
return answer
"""
)

TOUCH_SESSION = AtomicScript(
    _CONVERSATION_FUNCTIONS
    + """
-- Slides a live session because its user is active (typing, reading), as a message would.
-- KEYS[1..8] the conversation
-- ARGV[1] session idle seconds, ARGV[2] session max seconds, ARGV[3] retention seconds
-- Returns the seconds the session has left, or -1 if it is gone.
if redis.call('EXISTS', KEYS[SESSION]) == 0 then return -1 end
local now = now_seconds()
slide_session(now, tonumber(ARGV[1]), tonumber(ARGV[2]))
refresh_transcript(ARGV[3])
return redis.call('TTL', KEYS[SESSION])
""",
    with_indexes=True,
)

DELETE_CONVERSATION = AtomicScript(
    _CONVERSATION_FUNCTIONS
    + """
-- Deletes one conversation at once, every key of it and the events of its runs, only if it
-- is still what was chosen for deletion: owned by ARGV[1] (any owner if ""), and, if
-- ARGV[2] is "expired", without a live session (a user who came back meanwhile keeps it).
-- KEYS[1..8] the conversation, KEYS[9..] the events streams of the runs ARGV[3..] name, and
-- its search document
-- ARGV[1] owner (""), ARGV[2] "expired" or "", ARGV[3..] the ids of its runs, as read (its
-- runs index, and its latest run: extra ids only add DELs of keys that are gone)
-- Returns {"deleted", keys deleted, code hash...} with the hashes of the resume codes
-- issued for it (their keys are under their own hash tags, for the caller to delete);
-- {"refused"}; or {"changed"} when a run started since its runs index was read.
if ARGV[1] ~= '' and redis.call('HGET', KEYS[META], 'owner') ~= ARGV[1] then
  return {'refused'}
end
if ARGV[2] == 'expired' and redis.call('EXISTS', KEYS[SESSION]) == 1 then
  return {'refused'}
end
local listed = redis.call('ZRANGE', KEYS[RUNS], 0, -1)
local read = {}
for i = 3, #ARGV do read[ARGV[i]] = true end
for _, run_id in ipairs(listed) do
  if not read[run_id] then return {'changed'} end
end
local answer = {'deleted', 0}
for _, code_hash in ipairs(redis.call('SMEMBERS', KEYS[CODES])) do
  answer[#answer + 1] = code_hash
end
answer[2] = redis.call('DEL', unpack(KEYS))
return answer
"""
)

CHANGE_OWNER = AtomicScript(
    """
-- Gives a conversation to another owner, only if it still exists and has the expected one
-- (so an expired conversation is never recreated without its TTL).
-- KEYS[1] the conversation's meta hash
-- ARGV[1] the owner it has, ARGV[2] the owner it gets
-- Returns 1 if it changed hands, else 0.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return 1
"""
)

# Shared by the scripts that take rate-limit slots.
_SLOT_FUNCTIONS = """
-- Takes a slot in every window of a rate limit, or in none when one is full.
-- KEYS[first..] the windows' hashes (count, started: when the window began, in ms);
-- ARGV[arg + 2m], ARGV[arg + 2m + 1] the limit and length (ms) of the window KEYS[first + m].
-- Returns when each window began (ms), or false when one is full (nothing written).
local function take_slots(first, arg, now)
  local windows = {}
  for n = first, #KEYS do
    local at = arg + 2 * (n - first)
    local limit, length = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
    local stored = redis.call('HMGET', KEYS[n], 'count', 'started')
    local count, started = tonumber(stored[1]) or 0, tonumber(stored[2])
    if not started or started + length <= now then
      count, started = 0, now
    end
    if count >= limit then
      return false
    end
    windows[#windows + 1] = {KEYS[n], count + 1, started, started + length - now}
  end
  local began = {}
  for n, window in ipairs(windows) do
    redis.call('HSET', window[1], 'count', window[2], 'started', window[3])
    redis.call('PEXPIRE', window[1], window[4])
    began[n] = window[3]
  end
  return began
end
"""

RESERVE_SLOT = AtomicScript(
    _SLOT_FUNCTIONS
    + """
-- KEYS[n] window n's hash; ARGV[1] now in ms; ARGV[2n], ARGV[2n+1] window n's limit and
-- length in ms. Returns when each window began (ms), or nil when one is full.
return take_slots(1, 2, tonumber(ARGV[1]))
"""
)

RESERVE_INDEX_ENTRY = AtomicScript(
    _SLOT_FUNCTIONS
    + """
-- Lists something about to be created in its owner's index (a conversation, a share link),
-- unless the owner has as many live ones as allowed already or a window of its limit on
-- new ones is full. Taken before it is written, so ones created together can't all pass
-- one count. Nothing is written when refused.
-- KEYS[1] the owner's index (scored by last activity or creation, s); KEYS[2..] the
-- windows of its limit on new ones (none: no such limit)
-- ARGV[1] now in ms (for the windows); ARGV[2] now in s (for the index); ARGV[3] the
-- lifetime (s): an entry scored within it is live, and the index lives that long;
-- ARGV[4] the most live entries; ARGV[5] the new entry;
-- ARGV[6 + 2m], ARGV[7 + 2m] the limit and length (ms) of the window KEYS[2 + m]
-- Returns when each window began (ms); 0 at the most live entries; nil when a window is
-- full.
local now, lifetime = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - lifetime)  -- entries long dead
if redis.call('ZCOUNT', KEYS[1], '(' .. (now - lifetime), '+inf') >= tonumber(ARGV[4]) then
  return 0
end
local began = take_slots(2, 6, tonumber(ARGV[1]))
if not began then
  return false
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[5])
redis.call('EXPIRE', KEYS[1], lifetime, 'NX')
redis.call('EXPIRE', KEYS[1], lifetime, 'GT')
return began
"""
)

GIVE_BACK_SLOT = AtomicScript(
    """
-- Gives a slot back, except in a window that has begun again since (the slot went with it).
-- KEYS[n] the windows the slot was taken in; ARGV[n] when window n began then (ms)
-- Returns 0.
for n, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'started') == ARGV[n] then
    redis.call('HINCRBY', key, 'count', -1)
  end
end
return 0
"""
)


OPEN_WATCH = AtomicScript(
    """
-- Leases one of an owner's event streams, unless as many as allowed are open: leases that
-- ran out (their process died, say) are dropped first.
-- KEYS[1] the owner's watchers (watch id -> when its lease ends, s)
-- ARGV[1] now (s), ARGV[2] the lease (s), ARGV[3] the most streams, ARGV[4] the watch id
-- Returns 1 if leased, 0 if the owner has the most streams open already.
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(lease))
return 1
"""
)


RESERVE_LOGIN_ATTEMPT = AtomicScript(
    """
-- Takes a login attempt for a username before its password is checked, counted as a
-- failure at once (a success then clears the count), so that attempts sent together cannot
-- all pass a check made before any of them is counted. After ARGV[2] consecutive failures,
-- each further attempt waits a delay that doubles with every failure, up to ARGV[3].
-- KEYS[1] the username's failures hash (count; until: no attempt before this time)
-- ARGV[1] now (seconds), ARGV[2] free failures, ARGV[3] longest wait (seconds),
-- ARGV[4] how long the count is kept (seconds)
-- Returns 0 if the attempt may go on, else the seconds to wait (nothing counted).
local now = tonumber(ARGV[1])
local wait = tonumber(redis.call('HGET', KEYS[1], 'until') or '0') - now
if wait > 0 then return math.ceil(wait) end
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
local free = tonumber(ARGV[2])
if count >= free then
  redis.call('HSET', KEYS[1], 'until', now + math.min(2 ^ (count - free), tonumber(ARGV[3])))
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 0
"""
)


FIND_MESSAGES = AtomicScript(
    """
-- Looks for messages of one conversation that may match a search, newest first, on the
-- server, so that a search sends back those rather than every message.
-- KEYS[1] the conversation's meta hash, KEYS[2] its messages
-- ARGV[1] the owner it must have, ARGV[2] the most messages to answer with,
-- ARGV[3..] pairs of a lower-case ASCII text and how the message's lower-cased text must
-- hold it: "start" (at the start of a word), "whole" (as a whole word) or "anywhere"
-- Returns false if the conversation is gone or another's; else {title, updated_at, count,
-- index, message JSON, index, message JSON...} (0-based indexes).
local function word_byte(byte)
  return byte and (byte == 95 or (byte >= 48 and byte <= 57) or (byte >= 97 and byte <= 122)
    or (byte >= 65 and byte <= 90))
end

-- Plain searches (fast in C), each occurrence's neighbours checked here.
local function holds(text, part, how)
  if how == 'anywhere' then return string.find(text, part, 1, true) ~= nil end
  local from = 1
  while true do
    local first, last = string.find(text, part, from, true)
    if not first then return false end
    if not word_byte(string.byte(text, first - 1))
       and (how == 'start' or not word_byte(string.byte(text, last + 1))) then
      return true
    end
    from = first + 1
  end
end

local meta = redis.call('HMGET', KEYS[1], 'owner', 'title', 'updated_at')
if meta[1] ~= ARGV[1] then return false end
local messages = redis.call('LRANGE', KEYS[2], 0, -1)
local answer = {meta[2] or '', meta[3], #messages}
local most = tonumber(ARGV[2])
for i = #messages, 1, -1 do
  -- First the stored JSON as it is (it holds every part, and more), then the text alone.
  local raw, may = string.lower(messages[i]), true
  for p = 3, #ARGV, 2 do
    if not string.find(raw, ARGV[p], 1, true) then may = false break end
  end
  if may then
    local text = string.lower(cjson.decode(messages[i]).content)
    for p = 3, #ARGV, 2 do
      if not holds(text, ARGV[p], ARGV[p + 1]) then may = false break end
    end
  end
  if may then
    answer[#answer + 1] = i - 1
    answer[#answer + 1] = messages[i]
    if (#answer - 3) / 2 >= most then break end
  end
end
return answer
"""
)


INDEX_FOR_SEARCH = AtomicScript(
    """
-- Brings one conversation's search document up to date, if it changed since it was
-- written (its owner, last activity, message count or title): owner, title, the text of
-- every message, last activity, and the version it was written for; it expires when the
-- conversation does.
-- KEYS[1] the conversation's meta hash, KEYS[2] its messages, KEYS[3] its search document
-- ARGV[1] the owner it must have
-- Returns 1 if the document was written, 0 if it was up to date or the conversation is
-- gone or another's.
local meta = redis.call('HMGET', KEYS[1], 'owner', 'title', 'updated_at', 'message_count')
if meta[1] ~= ARGV[1] then return 0 end
local title = meta[2] or ''
local version = table.concat({meta[1], meta[3], meta[4] or '0', title}, '\\n')
if redis.call('HGET', KEYS[3], 'version') == version then return 0 end
local texts = {}
for i, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  texts[i] = cjson.decode(raw).content
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'owner', meta[1], 'title', title, 'body', table.concat(texts, '\\n'),
  'updated_at', meta[3], 'version', version)
redis.call('PEXPIREAT', KEYS[3], redis.call('PEXPIRETIME', KEYS[1]))
return 1
"""
)


TOUCH_OWNER_INDEX = AtomicScript(
    _OWNER_INDEX_FUNCTION
    + """
-- An owner's index kept in step with one write, sent after the write's own script in the
-- same round trip, on a cluster (elsewhere TOUCH_INDEXES does it with the mirrors).
-- KEYS[1] the owner's index
-- ARGV[1] the conversation id, ARGV[2] its new score ("" to keep its score), ARGV[3] seconds
-- Returns 1.
touch_owner_index(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return 1
"""
)

MIRROR_DEADLINES = AtomicScript(
    _MIRROR_FUNCTION
    + """
-- The mirrors kept in step with one write, sent after the write's own script in the same
-- round trip: on a cluster (elsewhere TOUCH_INDEXES does it with the owner's index), and
-- for a conversation given to another owner ("moved").
-- KEYS[1..5] the mirrors and ARGV[1..7] the write, as mirror_deadlines takes them (K, A)
-- Returns mirror_deadlines' answer.
return mirror_deadlines(KEYS, ARGV)
"""
)

TOUCH_INDEXES = AtomicScript(
    _OWNER_INDEX_FUNCTION
    + _MIRROR_FUNCTION
    + _INDEXES_FUNCTION
    + """
-- TOUCH_OWNER_INDEX and MIRROR_DEADLINES in one script, where one server holds every key
-- (not on a cluster, whose masters hold the owner's index and the mirrors apart), after a
-- write that has no script of its own (a write's script has it inside: with_indexes).
-- KEYS[1] the owner's index, KEYS[2..6] the mirrors (see mirror_deadlines)
-- ARGV[1] the conversation id, ARGV[2] its new score ("" to keep its score), ARGV[3] the
-- index's seconds, as TOUCH_OWNER_INDEX takes them; ARGV[4..] the write, as mirror_deadlines
-- takes it (A[1..7])
-- Returns mirror_deadlines' answer.
return touch_indexes(0, 0)
"""
)

FORGET_DUE = AtomicScript(
    """
-- Removes members from deadline mirrors, each only while it is still due by the first
-- mirror (a write since may have given it a new deadline).
-- KEYS[1] the sorted set whose score decides, KEYS[2..] more sorted sets to remove the
-- same members from; KEYS[#KEYS] is instead a hash if ARGV[2] is "hash"
-- ARGV[1] now (s), ARGV[2] "hash" or "", ARGV[3..] the members
-- Returns the members removed, each followed by its value in that hash ("" for none).
local now, last_is_hash = tonumber(ARGV[1]), ARGV[2] == 'hash'
local removed = {}
for i = 3, #ARGV do
  local member = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], member)
  if score and tonumber(score) <= now then
    local value = ''
    for k = 1, #KEYS do
      if k == #KEYS and last_is_hash then
        value = redis.call('HGET', KEYS[k], member) or ''
        redis.call('HDEL', KEYS[k], member)
      else
        redis.call('ZREM', KEYS[k], member)
      end
    end
    removed[#removed + 1] = member
    removed[#removed + 1] = value
  end
end
return removed
"""
)


_NAMED_SCRIPTS = (
    APPEND_MESSAGE_AND_TOUCH,
    START_RUN,
    ADD_RUN_CHUNK,
    FINISH_RUN,
    START_SESSION_FROM_NOTE,
    NOTE_RETURN_AFTER_EXPIRY,
    UPDATE_IF_EXISTS,
    SAVE_DRAFT,
    PARK_SESSION,
    RESUME_PARKED_SESSION,
    RESUME_AND_SETTLE,
    TOUCH_SESSION,
    DELETE_CONVERSATION,
    CHANGE_OWNER,
    RESERVE_SLOT,
    RESERVE_INDEX_ENTRY,
    GIVE_BACK_SLOT,
    RESERVE_LOGIN_ATTEMPT,
    OPEN_WATCH,
    FIND_MESSAGES,
    INDEX_FOR_SEARCH,
    TOUCH_OWNER_INDEX,
    MIRROR_DEADLINES,
    TOUCH_INDEXES,
    FORGET_DUE,
)
ALL_SCRIPTS = _NAMED_SCRIPTS + tuple(
    script.with_indexes for script in _NAMED_SCRIPTS if script.with_indexes
)
"""Every script a server must hold: each above, and each write's form with_indexes."""


def load_scripts(client: redis.Redis) -> None:
    """Load every script (on a cluster client, on every master)."""
    for script in ALL_SCRIPTS:
        client.script_load(script.source)


def _recording(pipe: redis.client.Pipeline) -> list[tuple[tuple, dict]]:
    """The commands queued on ``pipe`` from now on, as (args, options), to send again."""
    queued: list[tuple[tuple, dict]] = []
    queue_command = pipe.execute_command

    def record(*args, **options):
        queued.append((args, options))
        return queue_command(*args, **options)

    pipe.execute_command = record
    return queued


def one_server(r) -> bool:
    """Whether ``r`` (a client or its pipeline) sends to one server, which holds every key:
    not a cluster, whose masters hold the hash tags apart."""
    return not isinstance(r, RedisCluster)  # a cluster's pipeline is one too


class NotReplicated(redis.exceptions.ConnectionError):
    """No replica confirmed a write in time (see storage.replicas_to_confirm): the primary
    has it, but a failover now could lose it, so it is not acknowledged. Answered as Redis
    being unreachable; the same form sent again is stored once."""


def execute_pipeline(
    client: redis.Redis,
    queue: Callable[[redis.client.Pipeline], None],
    *,
    transaction=False,
    replicated=False,
) -> list:
    """Queue commands with ``queue`` and send them in one round trip; raises the first error
    (a script's refusal as its domain exception, see ``refusal``).

    Commands answered NOSCRIPT are sent again, alone, once every script is loaded. Only
    those: on a cluster one master may have lost its scripts (restarted, or a replica
    promoted) while the others ran theirs, and running those twice would apply them twice.

    ``replicated`` (a user's message) ends each round trip with WAIT for the replicas the
    client must hear from (see storage.replicas_to_confirm), and raises NotReplicated when
    fewer confirmed in time. Not with ``transaction``: WAIT inside MULTI does not wait.
    """
    replicas = replicas_to_confirm(client) if replicated else 0
    pipe = client.pipeline(transaction=transaction)
    queued = _recording(pipe)
    queue(pipe)
    answers = _send(pipe, replicas)
    missing = [
        number
        for number, answer in enumerate(answers)
        if isinstance(answer, redis.exceptions.NoScriptError)
    ]
    if missing:
        load_scripts(client)
        again = client.pipeline(transaction=transaction)
        for number in missing:
            args, options = queued[number]
            again.execute_command(*args, **options)
        for number, answer in zip(missing, _send(again, replicas), strict=True):
            answers[number] = answer
    for answer in answers:
        if isinstance(answer, Exception):
            domain_error = as_domain_error(answer)
            if domain_error is answer:
                raise answer
            raise domain_error from answer
    return answers


def _send(pipe: redis.client.Pipeline, replicas: int) -> list:
    """The answers of the commands queued on ``pipe``; with ``replicas``, sent followed by a
    WAIT for that many to confirm them, which raises NotReplicated if fewer did."""
    if not replicas:
        return pipe.execute(raise_on_error=False)
    pipe.wait(replicas, REPLICA_WAIT_MS)
    *answers, confirmed = pipe.execute(raise_on_error=False)
    if not isinstance(confirmed, int) or confirmed < replicas:
        raise NotReplicated(
            f"{confirmed} of {replicas} replicas confirmed within {REPLICA_WAIT_MS} ms"
        )
    return answers
