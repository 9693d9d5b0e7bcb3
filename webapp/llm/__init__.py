"""The model interface. Views and domain code use a Provider, never a vendor SDK."""

from collections.abc import Iterator, Sequence
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


class ModelStreamBroken(ModelError):
    """The reply stopped part-way: an error event or a dropped connection mid-stream."""

    kind = "broken"


class Provider(Protocol):
    """A model that writes replies and summaries."""

    name: str
    """Shown in the page header, e.g. "offline model"."""

    def stream_reply(
        self, turns: Sequence[Turn], prefix: str = "", note: str = ""
    ) -> Iterator[str]:
        """Yield the reply to the last user turn, chunk by chunk, carrying on from ``prefix``
        (text of the reply already written) if given. ``note`` is what the model should know
        of the conversation before ``turns`` (a summary), never shown as a message.
        Raises ModelError."""

    def summarise(self, turns: Sequence[Turn]) -> str:
        """Return a summary of the conversation that a new session can start from.
        Raises ModelError."""


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
            timeout=float(config["ANTHROPIC_TIMEOUT_SECONDS"]),
            max_retries=int(config["ANTHROPIC_MAX_RETRIES"]),
        )
    else:
        app.extensions["llm"] = OfflineProvider(
            chunk_delay=float(config["OFFLINE_CHUNK_DELAY_SECONDS"])
        )


def get_provider() -> Provider:
    """The current app's provider."""
    return current_app.extensions["llm"]
