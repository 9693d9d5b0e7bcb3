"""Runs: replies written in the background, checkpointed chunk by chunk in a Redis Stream.

A run belongs to one conversation. Its chunks go to a stream that any number of
watchers (tabs, instances) replay and follow; its status and heartbeat live in
the conversation's run hash. Ending a run stores its text as the reply message
exactly once, whatever ends it: the writer, Stop from any tab, the reaper, or
the process shutting down.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from webapp import deadlines, lifecycle, metrics
from webapp.conversations import (
    DEDUPE_WINDOW,
    ConversationGone,
    Lifetimes,
    Message,
    make_title,
    new_message_id,
    queue_indexes,
)
from webapp.llm import (
    MAX_TOKENS,
    REFUSAL,
    USAGE_FIELDS,
    Finished,
    ModelError,
    Provider,
    Thinking,
    Usage,
)
from webapp.storage import keys
from webapp.storage.scan import scan_page
from webapp.storage.scripts import (
    ADD_RUN_CHUNK,
    FINISH_RUN,
    RUN_IN_PROGRESS,
    SESSION_EXPIRED,
    START_RUN,
    execute_pipeline,
    refusal,
)

RUNNING, DONE, INTERRUPTED, STOPPED, FAILED = "running", "done", "interrupted", "stopped", "failed"
CUT_OFF, DECLINED = "cut_off", "declined"
"""A reply that reached its length limit (Continue carries on), or that the model declined
to write (Retry asks again)."""
ENDED_EARLY = (INTERRUPTED, STOPPED, FAILED, CUT_OFF, DECLINED)
"""How a reply can end short of whole: the page offers to write it again."""
GONE = "gone"
"""What a watcher is told of a run that is no longer the conversation's (or never was)."""
REPLY, CATCH_UP = "reply", "catch_up"
"""The kinds of run: a reply, written as a message; a catch-up, whose summary becomes the
note a new session starts from."""
THINKING = "thinking"
"""A run's phase while the model thinks before it writes."""


@refusal(RUN_IN_PROGRESS)
class RunInProgress(RuntimeError):
    """The conversation's latest reply is still being written."""


@refusal(SESSION_EXPIRED)
class SessionExpired(RuntimeError):
    """The conversation's session is over: catch up or start fresh before writing on."""


@dataclass(frozen=True)
class RunSettings:
    """How runs are written, watched and reaped."""

    max_events: int
    """Length cap of a run's events stream (chunks plus the end event)."""
    events_ttl_after_end: int
    """How long a run's events stay for late watchers after it ended (its text is then in
    the transcript)."""
    heartbeat_seconds: float
    stale_seconds: float
    """A running run whose heartbeat is older than this is interrupted by the reaper."""
    context_budget_tokens: int
    """Above this estimate the oldest part of the context is compacted into a summary."""


@dataclass(frozen=True)
class Run:
    """The latest run of a conversation, as stored in its run hash."""

    conversation_id: str
    id: str
    status: str
    message_id: str
    """The id of the reply message this run writes (new, or the one it continues)."""
    owner: str
    """The conversation's owner when the run started, whose index its end refreshes."""
    started_at: float
    heartbeat_at: float
    error_kind: str = ""
    error_message: str = ""
    kind: str = REPLY
    phase: str = ""
    """What the writer is doing, if it said (THINKING)."""
    usage: Usage = Usage()
    """The tokens it was billed for, once it has ended."""

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def index_member(self) -> str:
        """This run's member in the index of running runs."""
        return keys.running_run_member(self.conversation_id, self.id)


def _run_keys(conversation_id: str, run_id: str) -> list[str]:
    """KEYS of START_RUN and FINISH_RUN: the conversation, and the run's events."""
    return [*keys.conversation_keys(conversation_id), keys.run_events(conversation_id, run_id)]


def latest_run(r: redis.Redis, conversation_id: str) -> Run | None:
    """The conversation's latest run, if it has one."""
    return run_of(conversation_id, r.hgetall(keys.conversation_run(conversation_id)))


def queue_latest_run(pipe, conversation_id: str) -> None:
    """Queue the read of the conversation's latest run, in another read's round trip: its
    answer goes to ``run_of``."""
    pipe.hgetall(keys.conversation_run(conversation_id))


def run_of(conversation_id: str, fields: dict[str, str]) -> Run | None:
    """The run a conversation's run hash holds (``fields``, read whole), if any."""
    if not fields:
        return None
    return Run(
        conversation_id=conversation_id,
        id=fields["id"],
        status=fields["status"],
        message_id=fields["message_id"],
        owner=fields.get("owner", ""),
        started_at=float(fields["started_at"]),
        heartbeat_at=float(fields["heartbeat_at"]),
        error_kind=fields.get("error_kind", ""),
        error_message=fields.get("error_message", ""),
        kind=fields.get("kind", REPLY),
        phase=fields.get("phase", ""),
        usage=Usage(**{name: int(fields.get(name, 0)) for name in USAGE_FIELDS}),
    )


def start_run(
    r: redis.Redis,
    conversation_id: str,
    owner: str,
    lifetimes: Lifetimes,
    settings: RunSettings,
    *,
    user_message: Message | None = None,
    replacing: Run | None = None,
    prefix: str = "",
    kind: str = REPLY,
) -> Run | None:
    """Store ``user_message`` (if any) and start a run to reply, atomically, refreshing every
    TTL of the conversation and its owner's index and counting the message in the same
    round trip (with Sentinel, once a replica has them too: see
    storage.replicas_to_confirm).

    ``replacing`` is the run whose reply this one continues (with ``prefix``, its text) or
    retries. A CATCH_UP run starts only once the session has ended. Returns the new run, or
    None when nothing started (``user_message`` was a repeat; a session to catch up in is
    alive). Raises RunInProgress, SessionExpired or ConversationGone.
    """
    run_id = new_message_id()
    message_id = replacing.message_id if replacing else run_id
    now = time.time()
    member = keys.running_run_member(conversation_id, run_id)

    def queue(pipe):
        start = [
            run_id,
            user_message.id if user_message else "",
            user_message.to_json() if user_message else "",
            make_title(user_message.content) if user_message else "",
            lifetimes.session_idle,
            lifetimes.session_max,
            lifetimes.transcript_retention,
            DEDUPE_WINDOW,
            message_id,
            prefix,
            settings.max_events,
            owner,
            kind,
        ]
        write = deadlines.KEPT if kind == CATCH_UP else deadlines.SLID
        script = (START_RUN, _run_keys(conversation_id, run_id), start)
        queue_indexes(pipe, owner, conversation_id, lifetimes, write, script=script)
        pipe.zadd(keys.RUNS_RUNNING, {member: now})
        if user_message:
            metrics.queue_messages_appended(pipe, "user")

    def take_back() -> None:
        """Nothing started: the run is not running, and the message was not stored."""
        r.zrem(keys.RUNS_RUNNING, member)
        metrics.count_messages_appended(r, "user", -1 if user_message else 0)

    try:
        started, *_ = execute_pipeline(r, queue, replicated=True)
    except (RunInProgress, SessionExpired, ConversationGone):
        take_back()
        raise
    if not started:
        take_back()
        return None
    return Run(
        conversation_id,
        run_id,
        RUNNING,
        message_id,
        owner,
        started_at=now,
        heartbeat_at=now,
        kind=kind,
    )


def add_chunk(
    r: redis.Redis, run: Run, text: str, settings: RunSettings, *, phase: str = ""
) -> bool:
    """Append ``text`` to the run (and tell its watchers of a new ``phase``), and beat its
    heartbeat, in one round trip.

    Returns False once the run is no longer running (stopped, interrupted): stop writing.
    """

    chunk_id = new_message_id()

    def queue(pipe):
        ADD_RUN_CHUNK.queue(
            pipe,
            [
                keys.conversation_run(run.conversation_id),
                keys.run_events(run.conversation_id, run.id),
            ],
            [run.id, text, settings.max_events, chunk_id, phase],
        )
        pipe.zadd(keys.RUNS_RUNNING, {run.index_member: time.time()}, xx=True)

    still_running, _ = execute_pipeline(r, queue)
    return bool(still_running)


def finish_run(
    r: redis.Redis,
    run: Run,
    status: str,
    lifetimes: Lifetimes,
    settings: RunSettings,
    *,
    error: ModelError | None = None,
    stale_before: float = 0,
    finished: Finished | None = None,
) -> bool:
    """End ``run`` with ``status`` and store what it wrote as the reply, exactly once, with
    what the model said of its end (``finished``: its model and the tokens billed).

    With ``stale_before``, only if its heartbeat is older than that. Returns True if this
    call ended it.
    """
    usage = finished.usage if finished else Usage()

    def queue(pipe):
        finish = [
            run.id,
            status,
            error.kind if error else "",
            str(error) if error else "",
            (error.request_id or "") if error else "",
            stale_before,
            lifetimes.transcript_retention,
            settings.events_ttl_after_end,
            DEDUPE_WINDOW,
            finished.model if finished else "",
            *(getattr(usage, name) for name in USAGE_FIELDS),
        ]
        script = (FINISH_RUN, _run_keys(run.conversation_id, run.id), finish)
        if run.owner:
            queue_indexes(
                pipe, run.owner, run.conversation_id, lifetimes, deadlines.KEPT, script=script
            )
        else:
            FINISH_RUN.queue(pipe, *script[1:])

    ended, *_ = execute_pipeline(r, queue)
    if ended:
        r.zrem(keys.RUNS_RUNNING, run.index_member)
        if finished:
            metrics.count_model_tokens(r, finished.model, usage)
    return bool(ended)


def run_text(r: redis.Redis, run: Run) -> tuple[str, str]:
    """The text the run has written so far, and the id of its last chunk. Never the id of
    its end event: a page that read the run as running just before it ended hands that id
    to its watcher, which must still be told of the end."""
    chunks = [
        (event_id, fields["t"])
        for event_id, fields in r.xrange(keys.run_events(run.conversation_id, run.id))
        if "t" in fields
    ]
    return "".join(text for _, text in chunks), chunks[-1][0] if chunks else "0-0"


@dataclass(frozen=True)
class RunEvent:
    """One event of a run as watchers see it: a chunk of text, or the end."""

    id: str
    text: str = ""
    phase: str = ""
    """Set when the writer's phase changes (THINKING)."""
    status: str | None = None
    """Set on the end event only."""
    error_kind: str = ""


def read_events(
    r: redis.Redis, conversation_id: str, run_id: str, after: str, block_ms: int | None
) -> list[RunEvent]:
    """The run's events after event id ``after``, waiting up to ``block_ms`` for new ones
    (None: not waiting)."""
    answer = r.xread({keys.run_events(conversation_id, run_id): after}, count=500, block=block_ms)
    if not answer:
        return []
    (_, entries), *_ = answer
    return [
        RunEvent(
            id=entry_id,
            text=fields.get("t", ""),
            phase=fields.get("p", ""),
            status=fields.get("status"),
            error_kind=fields.get("error_kind", ""),
        )
        for entry_id, fields in entries
    ]


def request_stop(r: redis.Redis, run: Run, lifetimes: Lifetimes, settings: RunSettings) -> bool:
    """Stop the run from anywhere: it ends now, keeping what was written; the writer, in
    whichever process, sees that at its next chunk and stops."""
    return finish_run(r, run, STOPPED, lifetimes, settings)


class Continuation:
    """Joins what the model writes when it carries on a reply to the partial text before it,
    dropping what it repeats: a model asked to carry on sometimes starts by repeating the last
    words it wrote. The first OVERLAP_MAX characters are held back until that is known."""

    OVERLAP_MAX = 200
    OVERLAP_MIN = 8
    """A shorter match ("the ") is as likely chance as repetition."""

    def __init__(self, partial: str) -> None:
        self.tail = partial[-self.OVERLAP_MAX :]
        self.held: str | None = ""
        self.after_space = partial[-1:].isspace()
        """The partial ends in white space: the continuation's own leading space would
        double it."""

    def feed(self, text: str) -> str:
        """The part of ``text`` to write now."""
        if self.held is None:
            return text
        self.held += text
        if len(self.held) < self.OVERLAP_MAX and not self._diverged():
            return ""
        return self.flush()

    def flush(self) -> str:
        """Whatever is held back, less the repeated tail (at the end of the stream)."""
        if self.held is None:
            return ""
        held, self.held = self.held, None
        stripped = held.lstrip()
        tail = self.tail.rstrip()
        for size in range(min(len(stripped), len(tail)), self.OVERLAP_MIN - 1, -1):
            repeated = stripped[:size]
            if repeated == repeated.rstrip() and tail.endswith(repeated):
                rest = stripped[size:]
                return rest.lstrip() if self.after_space else rest
        return stripped if self.after_space else held

    def _diverged(self) -> bool:
        """Whether what is held can no longer be the start of a repetition of the tail."""
        stripped = self.held.lstrip()
        return len(stripped) >= self.OVERLAP_MIN and stripped[: self.OVERLAP_MIN] not in self.tail


def _ending(finished: Finished | None, wrote_anything: bool) -> str:
    """The status a reply ends with, from why the model stopped and whether there is text."""
    stop_reason = finished.stop_reason if finished else ""
    if stop_reason == REFUSAL:
        return DECLINED
    if not wrote_anything:
        return FAILED  # even at its length limit: thinking used it all, nothing to carry on
    return CUT_OFF if stop_reason == MAX_TOKENS else DONE


def write_reply(
    r: redis.Redis,
    provider: Provider,
    run: Run,
    lifetimes: Lifetimes,
    settings: RunSettings,
    prefix: str = "",
) -> str:
    """Produce the run's reply: stream it from the model into the run (carrying on from
    ``prefix``, its partial text, if given), then end the run as the model's stop reason says.

    Returns the status it ended with (or found, if something else ended it first).
    """
    context = lifecycle.reply_context(
        r, provider, run.conversation_id, settings.context_budget_tokens, leave_out=run.message_id
    )
    joining = Continuation(prefix) if prefix else None
    wrote, finished = bool(prefix.strip()), None
    try:
        for event in provider.stream_reply(context.turns, note=context.note, partial=prefix):
            if isinstance(event, Finished):
                finished = event
                event = joining.flush() if joining else ""
            elif isinstance(event, Thinking):
                if not add_chunk(r, run, "", settings, phase=THINKING):
                    metrics.count_model_call(r, "stopped")
                    return latest_status(r, run)
                continue
            elif joining:
                event = joining.feed(event)
            if event and not add_chunk(r, run, event, settings):
                metrics.count_model_call(r, "stopped")
                return latest_status(r, run)
            wrote = wrote or bool(event.strip())
    except ModelError as error:
        held = joining.flush() if joining else ""
        if held:
            add_chunk(r, run, held, settings)
        metrics.count_model_call(r, "failed", error.kind)
        finish_run(r, run, FAILED, lifetimes, settings, error=error)
        return FAILED
    status = _ending(finished, wrote)
    metrics.count_model_call(r, status)
    if status == DONE:
        metrics.count_messages_appended(r, "assistant", 1 if run.message_id == run.id else 0)
    finish_run(r, run, status, lifetimes, settings, finished=finished)
    return status


def write_catch_up(
    r: redis.Redis,
    provider: Provider,
    run: Run,
    lifetimes: Lifetimes,
    settings: RunSettings,
) -> str:
    """Produce a catch-up run's summary: the note a new session starts from (see
    lifecycle.catch_up), then end the run. Returns the status it ended with."""
    summary = lifecycle.catch_up(
        r, provider, run.conversation_id, run.owner, lifetimes, settings.context_budget_tokens
    )
    if summary:
        metrics.count_catch_up(r, summary.source, summary.tokens, summary.replaced_tokens)
    finish_run(r, run, DONE, lifetimes, settings)
    return DONE


def write(
    r: redis.Redis,
    provider: Provider,
    run: Run,
    lifetimes: Lifetimes,
    settings: RunSettings,
    prefix: str = "",
) -> str:
    """Produce what the run is for: a reply, or a catch-up."""
    if run.kind == CATCH_UP:
        return write_catch_up(r, provider, run, lifetimes, settings)
    return write_reply(r, provider, run, lifetimes, settings, prefix)


def latest_status(r: redis.Redis, run: Run) -> str:
    """The run's status now (``interrupted`` if a newer run has replaced it)."""
    latest = latest_run(r, run.conversation_id)
    return latest.status if latest and latest.id == run.id else INTERRUPTED


def beat(r: redis.Redis, runs: list[Run], settings: RunSettings) -> list[Run]:
    """Beat the heartbeat of each run; returns those that are no longer running."""
    return [run for run in runs if not add_chunk(r, run, "", settings)]


def interrupt_runs(r: redis.Redis, runs: list[Run], lifetimes: Lifetimes, settings: RunSettings):
    """Mark ``runs`` interrupted, keeping their partial text (a process shutting down)."""
    for run in runs:
        finish_run(r, run, INTERRUPTED, lifetimes, settings)


def seen_run(
    r: redis.Redis, conversation_id: str, lifetimes: Lifetimes, settings: RunSettings
) -> Run | None:
    """The conversation's latest run as whoever reads it (the page, a watcher, a send, Stop)
    must see it: one still marked running whose heartbeat is older than ``stale_seconds``
    (its writer died) is ended as interrupted first, its partial text kept, by the script
    that finishes runs. So a crash shows as interrupted as soon as anyone looks, not when
    the periodic reaper next runs (it stays, for runs nobody looks at)."""
    return run_as_seen(r, latest_run(r, conversation_id), lifetimes, settings)


def run_as_seen(
    r: redis.Redis, run: Run | None, lifetimes: Lifetimes, settings: RunSettings
) -> Run | None:
    """``run``, just read, as seen_run shows it: ``run`` itself unless its writer died, else
    the run as it is once ended as interrupted."""
    stale_before = time.time() - settings.stale_seconds
    if run is None or not run.running or run.heartbeat_at >= stale_before:
        return run
    finish_run(r, run, INTERRUPTED, lifetimes, settings, stale_before=stale_before)
    return latest_run(r, run.conversation_id)


def list_running_again(r: redis.Redis) -> int:
    """List every run marked running in the index of running runs again (SCAN, O(N)): its
    start put it there in a second step that a cluster can lose, and the reaper looks only
    there. Returns how many are running."""
    listed, cursor = 0, 0
    while True:
        cursor, found = scan_page(
            r, cursor, match=keys.CONVERSATION_RUN_PATTERN, count=1000, _type="hash"
        )
        pipe = r.pipeline(transaction=False)
        for key in found:
            pipe.hmget(key, "id", "status", "heartbeat_at")
        running = {
            keys.running_run_member(keys.conversation_id_of(key), run_id): float(heartbeat_at)
            for key, (run_id, status, heartbeat_at) in zip(
                found, pipe.execute() if found else [], strict=True
            )
            if status == "running"
        }
        if running:
            r.zadd(keys.RUNS_RUNNING, running, nx=True)
        listed += len(running)
        if cursor == 0:
            return listed


def reap_stale_runs(r: redis.Redis, lifetimes: Lifetimes, settings: RunSettings) -> int:
    """Mark runs whose heartbeat is stale as interrupted, keeping their partial text."""
    stale_before = time.time() - settings.stale_seconds
    reaped = 0
    for member in r.zrangebyscore(keys.RUNS_RUNNING, "-inf", stale_before):
        conversation_id, run_id = member.split(" ")
        run = latest_run(r, conversation_id)
        if run is None or run.id != run_id or not run.running:
            r.zrem(keys.RUNS_RUNNING, member)  # ended, replaced, or gone with its conversation
            continue
        if finish_run(r, run, INTERRUPTED, lifetimes, settings, stale_before=stale_before):
            reaped += 1
    return reaped


def follow(
    r: redis.Redis,
    conversation_id: str,
    run_id: str,
    after: str,
    block_ms: int,
    lifetimes: Lifetimes,
    settings: RunSettings,
) -> Iterator[RunEvent | None]:
    """Replay the run's events after ``after`` and follow it live, until its end event.

    Yields None after each wait with nothing new while the run is being written, so callers
    can send keep-alives; after each such wait the run is looked at (seen_run), so one
    whose writer died ends, and its end event arrives. A run that has ended (or was
    replaced, or is gone) with nothing after ``after`` ends the watch at once, with an end
    event of its status (GONE for a run that is no longer the conversation's): a watcher is
    never held open by a run that will write no more.
    """
    while True:
        events = read_events(r, conversation_id, run_id, after, None)
        if not events:
            latest = seen_run(r, conversation_id, lifetimes, settings)
            if latest is not None and latest.id == run_id and latest.running:
                events = read_events(r, conversation_id, run_id, after, block_ms)
                if not events:
                    yield None
                    continue
            else:
                events = read_events(r, conversation_id, run_id, after, None)  # an end just made
                if not events:
                    ours = latest is not None and latest.id == run_id
                    yield RunEvent(id=after, status=latest.status if ours else GONE)
                    return
        for event in events:
            yield event
            if event.status:
                return
        after = events[-1].id
