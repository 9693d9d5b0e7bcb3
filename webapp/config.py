"""Settings: defaults here, overridden by FLASK_-prefixed environment variables.

The vendor settings keep their own names: REDIS_URL, ANTHROPIC_API_KEY,
ANTHROPIC_BASE_URL. Every key of DEFAULTS is documented in the README. Settings that
contradict each other, or that are none of the values they take, stop the app at start-up
with a SettingsError saying which.
"""

import os
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app

from webapp import lifecycle, quotas, rate_limits
from webapp.conversations import Lifetimes
from webapp.llm import PROMPT_CACHE_TTLS, THINKING_EFFORTS
from webapp.runs import RunSettings

DEFAULTS = {
    # Signs cookies. Unset: a random key is made once and kept in the instance folder.
    "SECRET_KEY": None,
    # The working context slides forward on each action and dies after this much idleness...
    "SESSION_IDLE_SECONDS": 1800,
    # ...and at the latest this long after it began.
    "SESSION_MAX_SECONDS": 86400,
    # The transcript is kept this long after the last activity.
    "TRANSCRIPT_RETENTION_SECONDS": 7 * 86400,
    # The idle dialog opens this long before the session would expire (0: never; the
    # "Get a resume code" button stays).
    "IDLE_WARNING_SECONDS": 300,
    # A resume code is valid this long.
    "RESUME_CODE_TTL_SECONDS": 48 * 3600,
    "ANTHROPIC_MODEL": "claude-sonnet-5-5",
    "SUMMARY_MODEL": "claude-haiku-5-5",
    "ALLOW_GUESTS": True,
    "ALLOW_REGISTRATION": True,
    # How many reverse proxies stand in front of the app (their X-Forwarded-* are trusted).
    "TRUSTED_PROXIES": 0,
    # A login without "remember me" ends this long after it began.
    "LOGIN_SECONDS": 86400,
    # Failed logins allowed from one client address, per minute and per day (whatever the
    # usernames); past them, 429 before any password is checked.
    "LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE": 20,
    "LOGIN_FAILURES_PER_ADDRESS_PER_DAY": 200,
    # Accounts that may be registered from one client address per hour.
    "REGISTRATIONS_PER_ADDRESS_PER_HOUR": 10,
    # Replies (and other model calls) one person may ask for per minute...
    "MODEL_CALLS_PER_MINUTE": 20,
    # ...and all guests from one client address together (a fresh cookie is a new guest).
    "GUEST_MODEL_CALLS_PER_ADDRESS_PER_MINUTE": 60,
    # Conversations one guest, or one account, may keep at once (past it, delete one first).
    "LIVE_CONVERSATIONS_PER_GUEST": 100,
    "LIVE_CONVERSATIONS_PER_ACCOUNT": 1000,
    # New conversations (forks and restores included) one person may start per minute...
    "NEW_CONVERSATIONS_PER_MINUTE": 10,
    # ...and all guests from one client address together.
    "GUEST_NEW_CONVERSATIONS_PER_ADDRESS_PER_MINUTE": 30,
    # Resume codes one person may be given per hour.
    "RESUME_CODES_PER_HOUR": 30,
    # Searches of their own conversations one person may make per minute.
    "SEARCHES_PER_MINUTE": 30,
    # A share link (a read-only snapshot of a conversation) works this long...
    "SHARE_LINK_SECONDS": 30 * 86400,
    # ...and one person may keep this many at once.
    "SHARE_LINKS_PER_OWNER": 100,
    # The longest message a user may send, in characters.
    "MAX_MESSAGE_CHARS": 16_000,
    # The largest request body, in bytes. Unset: sized so that the longest message, or the
    # largest browser copy, in any script passes as a percent-encoded form (see body_limit).
    "MAX_CONTENT_LENGTH": None,
    # Messages per page of a transcript.
    "PAGE_SIZE": 50,
    # The system prompt of every reply.
    "SYSTEM_PROMPT": "You are a helpful assistant. Answer clearly and concisely.",
    # The longest reply, in tokens, thinking included (Claude thinks before it answers on the
    # 5.x models, and those tokens count toward this limit).
    "MAX_TOKENS": 16_000,
    # How hard Claude thinks before a reply: low, medium, high, xhigh or max (the API's
    # output_config.effort). Summaries always ask for low.
    "THINKING_EFFORT": "high",
    # The longest summary (Catch me up, compaction), in tokens, thinking included.
    "SUMMARY_MAX_TOKENS": 4000,
    # How long the conversation so far stays in Claude's prompt cache: 5m or 1h (reads
    # cost a tenth of input; writes 1.25x for 5m, 2x for 1h), or off.
    "PROMPT_CACHE_TTL": "5m",
    # How long to wait for Claude to answer (each read of the stream), and how often the
    # client retries overloaded, rate-limited and failed requests before giving up.
    "ANTHROPIC_TIMEOUT_SECONDS": 60,
    # How long to wait for a summary (Catch me up, compaction).
    "SUMMARY_TIMEOUT_SECONDS": 60,
    "ANTHROPIC_MAX_RETRIES": 2,
    # The offline model's pause between chunks, so replies visibly stream.
    "OFFLINE_CHUNK_DELAY_SECONDS": 0.05,
    # A running reply beats a heartbeat this often...
    "RUN_HEARTBEAT_SECONDS": 2,
    # ...and is marked interrupted when its heartbeat is older than this.
    "RUN_STALE_SECONDS": 15,
    # The reaper looks for such replies this often (and at start-up).
    "RUN_REAPER_INTERVAL_SECONDS": 60,
    # Length cap of a reply's events (chunks); above MAX_TOKENS, so never reached in practice.
    "RUN_EVENTS_MAX": 10_000,
    # How long a finished reply's events stay for late watchers (its text is in the transcript).
    "RUN_EVENTS_TTL_SECONDS": 3600,
    # How often the deployment sweeps what has ended since (sessions to count once, index
    # entries of conversations gone), found by their deadlines: each process tries at
    # start-up and at this interval, and the first to take the interval's lock sweeps for all.
    "SWEEP_INTERVAL_SECONDS": 300,
    # Replies written at once by one process.
    "RUN_THREADS": 16,
    # Event streams of replies being written that one person may hold open at once (tabs,
    # devices)...
    "STREAMS_PER_OWNER": 8,
    # ...and one process, on threads of their own besides those serving pages. A stream
    # refused either way falls back to the page refreshing itself.
    "STREAMS_PER_PROCESS": 200,
    # The working context's budget, in tokens as the model counts them (the last reply's
    # reported input, or a count; the offline model estimates): above it, its oldest part
    # is replaced by a summary.
    "CONTEXT_BUDGET_TOKENS": 100_000,
    # Conversations per page of the admin console.
    "ADMIN_PAGE_SIZE": 50,
    # /metrics also answers a scraper sending "Authorization: Bearer <this>"; unset: admins only.
    "METRICS_TOKEN": None,
    # REDIS_URL names one node of a Redis Cluster, whose client finds the other masters.
    "REDIS_CLUSTER": False,
    # The sentinels that watch the primary, as "host:port,host:port,...": the app asks them
    # where the primary is, and asks again after a failover. REDIS_URL then gives only the
    # password and database number. Unset: REDIS_URL names the server.
    "REDIS_SENTINELS": None,
    # The name the sentinels monitor the primary under.
    "REDIS_SENTINEL_MASTER": "mymaster",
    # Vendor settings, read without the FLASK_ prefix.
    "REDIS_URL": None,
    "ANTHROPIC_API_KEY": None,
    "ANTHROPIC_BASE_URL": None,
}

VENDOR_SETTINGS = ("REDIS_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


def load(app: Flask, overrides: dict | None = None) -> None:
    """Fill app.config from defaults, the environment, then ``overrides`` (tests)."""
    app.config.from_mapping(DEFAULTS)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the signed session cookie
    )
    app.config.from_prefixed_env()
    for name in VENDOR_SETTINGS:
        if os.environ.get(name):
            app.config[name] = os.environ[name]
    if overrides:
        app.config.update(overrides)
    if app.config["MAX_CONTENT_LENGTH"] is None:
        app.config["MAX_CONTENT_LENGTH"] = body_limit(int(app.config["MAX_MESSAGE_CHARS"]))
    _check_choices(app.config)
    if app.config["REDIS_SENTINELS"]:
        _check_sentinel_settings(app.config)
        app.config["REDIS_SENTINELS"] = sentinel_addresses(app.config["REDIS_SENTINELS"])
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _instance_secret(Path(app.instance_path))


class SettingsError(ValueError):
    """Settings the app cannot start with; the message names them and says why."""


CHOICES = {"THINKING_EFFORT": THINKING_EFFORTS, "PROMPT_CACHE_TTL": PROMPT_CACHE_TTLS}
"""The settings that take one of a few values, with those values."""


def _check_choices(config: dict) -> None:
    """Refuse a setting that is none of the values it takes (the API would refuse every
    reply sent with it)."""
    for name, values in CHOICES.items():
        if config[name] not in values:
            raise SettingsError(
                f"FLASK_{name} is {config[name]!r}: it takes one of {', '.join(values)}"
            )


def _check_sentinel_settings(config: dict) -> None:
    """Refuse what contradicts finding the primary through sentinels."""
    if config["REDIS_CLUSTER"]:
        raise SettingsError(
            "FLASK_REDIS_SENTINELS and FLASK_REDIS_CLUSTER exclude each other: sentinels "
            "fail over one primary, a cluster's masters fail over by themselves"
        )
    if not config["REDIS_SENTINEL_MASTER"]:
        raise SettingsError("FLASK_REDIS_SENTINEL_MASTER is empty: name the monitored primary")
    url = config["REDIS_URL"]
    if url and urllib.parse.urlsplit(url).scheme != "redis":
        raise SettingsError(
            "with FLASK_REDIS_SENTINELS, REDIS_URL gives only the password and database "
            "number, as redis://[[user]:password@]/<db> (not TLS, not a socket)"
        )


def sentinel_addresses(setting: str) -> list[tuple[str, int]]:
    """The (host, port) of each sentinel that FLASK_REDIS_SENTINELS lists."""
    addresses = []
    for item in str(setting).split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(
                f"FLASK_REDIS_SENTINELS: {item.strip()!r} is not host:port "
                "(list the sentinels as host:port,host:port,...)"
            )
        addresses.append((host, int(port)))
    return addresses


PERCENT_ENCODED_BYTES_PER_CHARACTER = 12
"""The most a character takes in a form body: four bytes of UTF-8, each sent as "%XX"."""
FORM_FIELDS_BYTES = 16 * 1024
"""Room for the rest of a form (field names, the CSRF token, ids)."""


def body_limit(max_message_chars: int) -> int:
    """The largest request body that lets a message of ``max_message_chars`` characters, or
    a browser's copy of a conversation, in any script through as a form."""
    characters = max(max_message_chars, lifecycle.COPY_MAX_CHARS)
    return characters * PERCENT_ENCODED_BYTES_PER_CHARACTER + FORM_FIELDS_BYTES


def _instance_secret(instance: Path) -> str:
    """A secret made once per instance folder, so cookies survive restarts."""
    path = instance / "secret_key"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass(frozen=True)
class Settings:
    """What the domain is handed of the settings, built once at start-up."""

    lifetimes: Lifetimes
    runs: RunSettings
    login_failure_limits: tuple[rate_limits.Window, ...]
    """Failed logins allowed per client address."""
    registration_limits: tuple[rate_limits.Window, ...]
    """Registrations allowed per client address."""
    quotas: quotas.Limits
    """How much one visitor may keep and ask for."""


def settings_of(config: dict) -> Settings:
    """The domain's settings, as ``config`` (the app's, filled by ``load``) asks."""
    return Settings(
        lifetimes=Lifetimes(
            session_idle=int(config["SESSION_IDLE_SECONDS"]),
            session_max=int(config["SESSION_MAX_SECONDS"]),
            transcript_retention=int(config["TRANSCRIPT_RETENTION_SECONDS"]),
        ),
        runs=RunSettings(
            max_events=int(config["RUN_EVENTS_MAX"]),
            events_ttl_after_end=int(config["RUN_EVENTS_TTL_SECONDS"]),
            heartbeat_seconds=float(config["RUN_HEARTBEAT_SECONDS"]),
            stale_seconds=float(config["RUN_STALE_SECONDS"]),
            context_budget_tokens=int(config["CONTEXT_BUDGET_TOKENS"]),
        ),
        login_failure_limits=(
            rate_limits.per_minute(int(config["LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE"])),
            rate_limits.per_day(int(config["LOGIN_FAILURES_PER_ADDRESS_PER_DAY"])),
        ),
        registration_limits=(
            rate_limits.per_hour(int(config["REGISTRATIONS_PER_ADDRESS_PER_HOUR"])),
        ),
        quotas=quotas.Limits(
            model_calls=(rate_limits.per_minute(int(config["MODEL_CALLS_PER_MINUTE"])),),
            guest_model_calls_per_address=(
                rate_limits.per_minute(int(config["GUEST_MODEL_CALLS_PER_ADDRESS_PER_MINUTE"])),
            ),
            live_conversations_per_guest=int(config["LIVE_CONVERSATIONS_PER_GUEST"]),
            live_conversations_per_account=int(config["LIVE_CONVERSATIONS_PER_ACCOUNT"]),
            new_conversations=(
                rate_limits.per_minute(int(config["NEW_CONVERSATIONS_PER_MINUTE"])),
            ),
            guest_new_conversations_per_address=(
                rate_limits.per_minute(
                    int(config["GUEST_NEW_CONVERSATIONS_PER_ADDRESS_PER_MINUTE"])
                ),
            ),
            resume_codes=(rate_limits.per_hour(int(config["RESUME_CODES_PER_HOUR"])),),
            searches=(rate_limits.per_minute(int(config["SEARCHES_PER_MINUTE"])),),
        ),
    )


def current() -> Settings:
    """The current app's settings, as built at start-up."""
    return current_app.extensions["settings"]
