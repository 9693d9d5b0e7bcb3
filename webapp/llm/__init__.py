"""The model interface. Views and domain code use a Provider, never a vendor SDK."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Protocol

from flask import Flask, current_app


class Turn(Protocol):
    """What a provider reads of a message."""

    role: str
    content: str


NOTE_INTRODUCTION = (
    "You are continuing an earlier conversation with this user. These are your notes of "
    "what came before; rely on them as your own memory:"
)


THINKING_EFFORTS = ("low", "medium", "high", "xhigh", "max")
"""The THINKING_EFFORT setting's values: the Messages API's ``output_config.effort``."""
CACHE_OFF = "off"
"""The PROMPT_CACHE_TTL that sends no cache_control."""
PROMPT_CACHE_TTLS = ("5m", "1h", CACHE_OFF)
"""The PROMPT_CACHE_TTL setting's values: a ``cache_control``'s ttl, or none."""

END_TURN, MAX_TOKENS, REFUSAL = "end_turn", "max_tokens", "refusal"
"""The stop reasons a reply's meaning depends on (the Messages API's names): it is whole, it
was cut off at its length limit (Continue carries on), or the model declined (Retry). Any
other reason (``stop_sequence``, ``pause_turn``, ``model_context_window_exceeded``...) counts
as whole when there is text, and as failed when there is none."""


@dataclass(frozen=True)
class Usage:
    """The tokens one model call was billed for, as the API reported them."""

    input_tokens: int = 0
    """Input tokens neither written to nor read from the prompt cache."""
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    """Thinking included."""

    @property
    def prompt_tokens(self) -> int:
        """Everything the request held, however it was billed."""
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens


USAGE_FIELDS = tuple(field.name for field in fields(Usage))
"""Usage's fields, the names its counts are stored under (a run's hash, a conversation's
totals)."""


@dataclass(frozen=True)
class Thinking:
    """The model is thinking before it answers (what it thinks is never shown or kept)."""


@dataclass(frozen=True)
class Finished:
    """The end of a reply: why it stopped, and what it cost."""

    stop_reason: str
    usage: Usage
    model: str


ReplyEvent = str | Thinking | Finished
"""What a reply stream yields: text, a sign of thinking, and once, last, its end."""


@dataclass(frozen=True)
class SummaryText:
    text: str
    stop_reason: str
    usage: Usage


def carry_on_request(partial: str) -> str:
    """The user turn that asks the model to carry on a reply cut short (current models refuse
    a request that ends with an assistant turn, so Continue can't prefill)."""
    tail = " ".join(partial.split()[-8:])
    return (
        "Your reply above was cut off. Carry on exactly where it stopped, right after "
        f"“{tail}”, without repeating anything already written and without any preamble."
    )


class ModelError(Exception):
    """The model could not write (all of) a reply. ``kind`` names the case for the page."""

    kind = "error"

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class ModelBusy(ModelError):
    """Overloaded, rate-limited, erroring or unreachable, after the client's own retries."""

    kind = "busy"


class ModelMisconfigured(ModelError):
    """The request was refused for a reason only the operator can fix (key, model, quota)."""

    kind = "misconfigured"


class ModelUnavailable(ModelMisconfigured):
    """The configured model id is unknown to the API, or retired."""

    kind = "unavailable"


class ModelSpendLimit(ModelMisconfigured):
    """The organisation's spend limit is reached: no retry helps until it is raised."""

    kind = "spend_limit"


class ModelStreamBroken(ModelError):
    """The reply stopped part-way: an error event or a dropped connection mid-stream."""

    kind = "broken"


class Provider(Protocol):
    """A model that writes replies and summaries."""

    name: str
    """Shown in the page header, e.g. "offline model"."""

    def stream_reply(
        self, turns: Sequence[Turn], note: str = "", partial: str = ""
    ) -> Iterator[ReplyEvent]:
        """Yield the reply to the last user turn: text chunk by chunk (Thinking while the
        model thinks), then Finished. With ``partial`` (a reply cut short), carry on from it:
        the request sends it as an assistant turn, then a user turn asking to carry on
        (carry_on_request). ``note`` is what the model should know of the conversation
        before ``turns`` (a summary), never shown as a message. Raises ModelError."""

    def summarise(self, turns: Sequence[Turn], *, unverified: bool = False) -> SummaryText:
        """A summary of the conversation that a new session can start from. ``unverified``
        turns (a browser's copy) reach the model only as quoted data in a delimited block,
        with the instruction that they are to be summarised, never obeyed.
        Raises ModelError."""

    def count_tokens(self, turns: Sequence[Turn], note: str = "") -> int:
        """The input tokens a reply to ``turns`` would be billed for (exact where the model
        can count them). Raises ModelError."""

    def unavailable_models(self) -> dict[str, str]:
        """The configured models that can't be used, by setting name, with why; checked
        once, at start-up."""


def init_app(app: Flask) -> None:
    """Choose the provider: Claude when an API key is configured, else the offline model."""
    from webapp.llm.offline import OfflineProvider

    config = app.config
    if config["ANTHROPIC_API_KEY"]:
        from webapp.llm.claude import ClaudeProvider  # the SDK is only loaded when used

        app.extensions["llm"] = ClaudeProvider(
            api_key=config["ANTHROPIC_API_KEY"],
            base_url=config["ANTHROPIC_BASE_URL"],
            model=config["ANTHROPIC_MODEL"],
            summary_model=config["SUMMARY_MODEL"],
            system_prompt=config["SYSTEM_PROMPT"],
            max_tokens=int(config["MAX_TOKENS"]),
            thinking_effort=config["THINKING_EFFORT"],
            summary_max_tokens=int(config["SUMMARY_MAX_TOKENS"]),
            prompt_cache_ttl=config["PROMPT_CACHE_TTL"],
            timeout=float(config["ANTHROPIC_TIMEOUT_SECONDS"]),
            summary_timeout=float(config["SUMMARY_TIMEOUT_SECONDS"]),
            max_retries=int(config["ANTHROPIC_MAX_RETRIES"]),
        )
    else:
        app.extensions["llm"] = OfflineProvider(
            chunk_delay=float(config["OFFLINE_CHUNK_DELAY_SECONDS"])
        )


def get_provider() -> Provider:
    """The current app's provider."""
    return current_app.extensions["llm"]
