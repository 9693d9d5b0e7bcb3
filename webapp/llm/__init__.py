"""The model interface. Views and domain code use a Provider, never a vendor SDK."""

from collections.abc import Iterator, Sequence
from typing import Protocol

from flask import Flask, current_app


class Turn(Protocol):
    """What a provider reads of a message."""

    role: str
    content: str


class Provider(Protocol):
    """A model that writes replies and summaries."""

    name: str
    """Shown in the page header, e.g. "offline model"."""

    def stream_reply(self, turns: Sequence[Turn]) -> Iterator[str]:
        """Yield the reply to the last user turn, chunk by chunk."""

    def summarise(self, turns: Sequence[Turn]) -> str:
        """Return a summary of the conversation that a new session can start from."""


def init_app(app: Flask) -> None:
    """Choose the provider: the offline model unless an API key is configured."""
    from webapp.llm.offline import OfflineProvider

    app.extensions["llm"] = OfflineProvider()


def get_provider() -> Provider:
    """The current app's provider."""
    return current_app.extensions["llm"]
