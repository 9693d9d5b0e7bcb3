"""Summaries that a new session starts from: by the model, or made locally when the model
cannot be reached."""

from collections.abc import Sequence
from dataclasses import dataclass

from webapp.llm import ModelError, Provider, Turn
from webapp.llm.offline import OfflineProvider

MODEL, EXTRACTIVE, BROWSER = "model", "extractive", "browser"
"""Where a summary came from: the model; a local extractive summary (the model failed);
the model (or the local fallback) over the copy a browser kept of a conversation that is
gone."""

_local = OfflineProvider()


@dataclass(frozen=True)
class Summary:
    text: str
    source: str


def summarise(provider: Provider, turns: Sequence[Turn]) -> Summary:
    """One summarisation call; if the model fails, a local extractive summary instead."""
    try:
        text = provider.summarise(turns).strip()
    except ModelError:
        text = ""
    if text:
        return Summary(text, MODEL)
    return Summary(_local.summarise(turns), EXTRACTIVE)


def estimate_tokens(texts: Sequence[str]) -> int:
    """About four characters a token, the usual rule of thumb for English text; enough to
    decide when a context outgrows its budget, not to bill by."""
    return sum(len(text) for text in texts) // 4 + 1
