"""Counters of what the app does, kept in Redis, and their Prometheus text for /metrics.

Why the counters live in Redis rather than in prometheus_client's in-process counters: the
app runs as several gunicorn workers and several instances behind a load balancer, and an
event is counted by whichever process sees it (a reply by the process whose thread writes
it). In-process counters would each hold a share, start again from zero on every restart,
and a scrape would only see the process it happened to reach; prometheus_client's
multiprocess mode covers one machine's workers through shared files, not several machines.
One Redis hash, incremented with HINCRBY (atomic, one round trip), holds the totals of every
process: any instance answers /metrics with the same numbers, and they last as long as the
data does. The price is a round trip per count, so counting never fails what it counts: a
Redis error while counting is logged and the count is lost.

/metrics is rendered by a collector of our own on a registry of our own (never the global
default registry, which would add this process's own Python metrics as if they were the
app's).
"""

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from webapp.storage import keys

log = logging.getLogger(__name__)

HOUR = 3600
RESUME_FAILURE_HOURS_KEPT = 48
"""Hourly buckets of resume failures live this many hours (the console shows the last 24)."""


@dataclass(frozen=True)
class Counter:
    """One counter: its Prometheus name (without ``_total``), help, and its labels."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    known: tuple[str, ...] = ()
    """Values of a single label always shown, at 0 until first counted, so dashboards see
    every series."""


MESSAGES_APPENDED = Counter(
    "messages_appended",
    "Messages stored in conversations: user messages, and replies the model finished.",
    ("role",),
    ("user", "assistant"),
)
MODEL_CALLS = Counter(
    "model_calls",
    "Replies the model was asked to write, by how the writing ended "
    "(cut_off: at its length limit; declined: the model refused; stopped: ended from "
    "elsewhere, by Stop or the reaper, while the model wrote).",
    ("outcome",),
    ("done", "cut_off", "declined", "failed", "stopped"),
)
MODEL_ERRORS = Counter(
    "model_errors",
    "Model calls that failed, by kind (busy, misconfigured, unavailable: the model id, "
    "spend_limit, broken stream, other).",
    ("kind",),
    ("busy", "misconfigured", "unavailable", "spend_limit", "broken", "error"),
)
SESSION_ENDED = "session_ended"
"""The reason of a failed resume that is no code: the owner came back to a conversation
whose session had ended (counted once for each ended session)."""
RESUME_FAILURES = Counter(
    "resume_failures",
    "Failed resumes, by reason: a code refused (malformed, unknown, expired, used, "
    "wrong_account, rate_limited), or a return after the session ended (session_ended).",
    ("reason",),
)
RESUME_CODES_ISSUED = Counter("resume_codes_issued", "Resume codes handed out.")
RESUME_CODES_REDEEMED = Counter("resume_codes_redeemed", "Resume codes redeemed.")
CATCH_UPS = Counter(
    "catch_ups",
    "Catch me up summaries, by outcome (model: written by the model; extractive: made "
    "locally when the model could not be reached; browser: from a browser's copy of a "
    "conversation that was gone).",
    ("outcome",),
    ("model", "extractive", "browser"),
)
SESSIONS_EXPIRED = Counter("sessions_expired", "Sessions that ended by idling, seen by the sweep.")
FORKS = Counter("forks", "Conversations forked from a message.")
MODEL_TOKENS = Counter(
    "model_tokens",
    "Tokens the model was billed for, by model and kind (input: read neither from nor into "
    "the prompt cache; cache_write; cache_read; output, thinking included).",
    ("model", "kind"),
)
CATCH_UP_TOKENS = Counter(
    "catch_up_tokens",
    "Catch me up: the tokens of the summaries written (summary), and of the history each "
    "one replaced (history).",
    ("kind",),
    ("summary", "history"),
)
COUNTERS = (
    MESSAGES_APPENDED,
    MODEL_CALLS,
    MODEL_ERRORS,
    RESUME_FAILURES,
    RESUME_CODES_ISSUED,
    RESUME_CODES_REDEEMED,
    CATCH_UPS,
    SESSIONS_EXPIRED,
    FORKS,
    MODEL_TOKENS,
    CATCH_UP_TOKENS,
)


def _field(counter: Counter, *label_values: str) -> str:
    """The counter's field in the counters hash: ``name``, or ``name:value`` and
    ``name:value|value`` for its labels (no label value holds a "|")."""
    return f"{counter.name}:{'|'.join(label_values)}" if counter.labels else counter.name


REDEEMED_FIELD = _field(RESUME_CODES_REDEEMED)
"""The counters' field of redeemed codes (counted inside the redemption's script on one
server, see resume_codes.redeem_for)."""


def _count(r: redis.Redis, increments: Mapping[str, int], queue_more=None) -> None:
    """Add ``increments`` (hash field -> amount) in one round trip; never raises."""
    try:
        pipe = r.pipeline(transaction=False)
        for field, amount in increments.items():
            pipe.hincrby(keys.METRICS_COUNTERS, field, amount)
        if queue_more:
            queue_more(pipe)
        pipe.execute()
    except redis.exceptions.RedisError as error:
        log.warning("a count was lost: %s", error)


def count_messages_appended(r: redis.Redis, role: str, amount: int = 1) -> None:
    """Count messages stored (``role`` user or assistant); an amount of 0 costs nothing."""
    if amount:
        _count(r, {_field(MESSAGES_APPENDED, role): amount})


def queue_messages_appended(pipe, role: str, amount: int = 1) -> None:
    """Count messages stored in the round trip that stores them: queued on ``pipe``, ahead of
    knowing they were (take the count back with ``count_messages_appended(r, role, -amount)``
    when they were not: a repeat, a refusal)."""
    pipe.hincrby(keys.METRICS_COUNTERS, _field(MESSAGES_APPENDED, role), amount)


def count_model_call(r: redis.Redis, outcome: str, error_kind: str | None = None) -> None:
    """Count a reply the model wrote (``outcome`` done, failed, stopped), and its error kind."""
    increments = {_field(MODEL_CALLS, outcome): 1}
    if error_kind:
        increments[_field(MODEL_ERRORS, error_kind)] = 1
    _count(r, increments)


def count_resume_failure(r: redis.Redis, reason: str, now: float | None = None) -> None:
    """Count a failed resume code entry: in the total by reason, and in this hour's bucket
    (kept RESUME_FAILURE_HOURS_KEPT hours) for the console's chart."""
    bucket = keys.resume_failures_in_hour(int((now or time.time()) // HOUR))

    def queue_bucket(pipe):
        pipe.hincrby(bucket, reason, 1)
        pipe.expire(bucket, RESUME_FAILURE_HOURS_KEPT * HOUR)

    _count(r, {_field(RESUME_FAILURES, reason): 1}, queue_bucket)


def count_resume_code_issued(r: redis.Redis) -> None:
    _count(r, {_field(RESUME_CODES_ISSUED): 1})


def queue_resume_code_redeemed(pipe) -> None:
    """Count a redeemed code in the round trip that settles its redemption (on a cluster;
    on one server the redemption's script counts it: REDEEMED_FIELD)."""
    pipe.hincrby(keys.METRICS_COUNTERS, REDEEMED_FIELD, 1)


def count_catch_up(r: redis.Redis, outcome: str, tokens: int, replaced_tokens: int) -> None:
    """Count a Catch me up (``outcome`` model, extractive or browser), with the tokens of its
    summary and of the history it replaced."""
    _count(
        r,
        {
            _field(CATCH_UPS, outcome): 1,
            _field(CATCH_UP_TOKENS, "summary"): tokens,
            _field(CATCH_UP_TOKENS, "history"): replaced_tokens,
        },
    )


def count_model_tokens(r: redis.Redis, model: str, usage) -> None:
    """Count the tokens one model call was billed for (``usage``: webapp.llm.Usage)."""
    by_kind = {
        "input": usage.input_tokens,
        "cache_write": usage.cache_write_tokens,
        "cache_read": usage.cache_read_tokens,
        "output": usage.output_tokens,
    }
    increments = {_field(MODEL_TOKENS, model, kind): n for kind, n in by_kind.items() if n}
    if increments:
        _count(r, increments)


def count_sessions_expired(r: redis.Redis, amount: int) -> None:
    """Count sessions the sweep found expired; an amount of 0 costs nothing."""
    if amount:
        _count(r, {_field(SESSIONS_EXPIRED): amount})


def count_fork(r: redis.Redis) -> None:
    _count(r, {_field(FORKS): 1})


def read_counters(r: redis.Redis) -> dict[str, int]:
    """Every counter's value by hash field (``name`` or ``name:label value``)."""
    return {field: int(value) for field, value in r.hgetall(keys.METRICS_COUNTERS).items()}


@dataclass(frozen=True)
class HourCount:
    starts_at: float
    """The hour's start, a UTC timestamp."""
    count: int


def resume_failures_by_hour(
    r: redis.Redis, hours: int = 24, now: float | None = None
) -> list[HourCount]:
    """Resume failures (all reasons) in each of the last ``hours`` hours, oldest first, the
    current hour last; one round trip."""
    current = int((now or time.time()) // HOUR)
    wanted = range(current - hours + 1, current + 1)
    pipe = r.pipeline(transaction=False)
    for hour in wanted:
        pipe.hvals(keys.resume_failures_in_hour(hour))
    return [
        HourCount(starts_at=hour * HOUR, count=sum(int(value) for value in values))
        for hour, values in zip(wanted, pipe.execute(), strict=True)
    ]


class _AppCollector:
    """The app's metrics as read from Redis once, for one scrape."""

    def __init__(self, counters: Mapping[str, int], conversations: Mapping[str, int]) -> None:
        self.counters, self.conversations = counters, conversations

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "conversations",
            "Conversations by state.",
            labels=["state"],
        )
        for state, number in self.conversations.items():
            gauge.add_metric([state], number)
        yield gauge
        for counter in COUNTERS:
            yield self._family(counter)

    def _family(self, counter: Counter) -> CounterMetricFamily:
        if not counter.labels:
            return CounterMetricFamily(
                counter.name, counter.help, value=self.counters.get(counter.name, 0)
            )
        family = CounterMetricFamily(counter.name, counter.help, labels=list(counter.labels))
        values = {(known,): 0 for known in counter.known}
        for field, value in self.counters.items():
            name, _, label_values = field.partition(":")
            if name == counter.name and label_values:
                values[tuple(label_values.split("|"))] = value
        for label_values, value in sorted(values.items()):
            family.add_metric(list(label_values), value)
        return family


def render(r: redis.Redis, conversations_by_state: Mapping[str, int]) -> bytes:
    """The Prometheus text exposition of every counter, and of ``conversations_by_state``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_AppCollector(read_counters(r), conversations_by_state))
    return generate_latest(registry)
