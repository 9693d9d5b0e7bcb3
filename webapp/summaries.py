"""Summaries that a new session starts from: by the model, or made locally when the model
cannot be reached or its summary can't be used."""

from collections.abc import Sequence
from dataclasses import dataclass

from webapp.llm import MAX_TOKENS, ModelError, Provider, Turn
from webapp.llm.offline import OfflineProvider, estimate_tokens

MODEL, EXTRACTIVE, BROWSER = "model", "extractive", "browser"
"""Where a summary came from: the model; a local extractive summary (the model failed, was
cut off, or wrote nothing); the model (or the local fallback) over the copy a browser kept
of a conversation that is gone."""

_local = OfflineProvider()


@dataclass(frozen=True)
class Summary:
    text: str
    source: str
    tokens: int
    """The summary's own size, in tokens."""
    replaced_tokens: int
    """The size of what it summarised, in tokens: what a session starting from it saves."""


def summarise(provider: Provider, turns: Sequence[Turn], *, unverified: bool = False) -> Summary:
    """One summarisation call (of ``unverified`` turns: a browser's copy, see
    Provider.summarise); a local extractive summary instead if the model fails, stops at its
    length limit (a summary cut short misses what comes next) or writes nothing."""
    try:
        written = provider.summarise(turns, unverified=unverified)
    except ModelError:
        written = None
    if written and written.text.strip() and written.stop_reason != MAX_TOKENS:
        usage = written.usage
        return Summary(written.text.strip(), MODEL, usage.output_tokens, usage.prompt_tokens)
    text = _local.extract(turns)
    replaced = estimate_tokens([turn.content for turn in turns])
    return Summary(text, EXTRACTIVE, estimate_tokens([text]), replaced)
