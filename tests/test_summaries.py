"""Summaries: the model's when it answers, a local extractive one when it cannot; token
estimates."""

from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webapp.llm import (
    END_TURN,
    MAX_TOKENS,
    ModelBusy,
    ModelError,
    ModelMisconfigured,
    ModelStreamBroken,
    SummaryText,
    Usage,
)
from webapp.llm.offline import estimate_tokens
from webapp.summaries import EXTRACTIVE, MODEL, Summary, summarise


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


TURNS = (
    Turn("user", "Plan a trip to Lisbon in spring. I like old trams."),
    Turn("assistant", "Spring is a fine time. Ride tram 28 early."),
    Turn("user", "What about day trips? Sintra maybe."),
)


USAGE = Usage(input_tokens=1200, cache_read_tokens=300, output_tokens=90)


class Answering:
    """A provider whose summary is ``text``, stopping for ``stop_reason``; it records the
    turns it was asked about."""

    name = "answering model"

    def __init__(self, text: str, stop_reason: str = END_TURN) -> None:
        self.text, self.stop_reason = text, stop_reason
        self.asked: list[list[Turn]] = []

    def summarise(self, turns, *, unverified=False):
        self.asked.append(list(turns))
        return SummaryText(self.text, self.stop_reason, USAGE)


def extractive(llm, turns):
    """The local fallback's summary of ``turns``, with its estimated sizes."""
    text = llm.summarise(turns).text
    return Summary(
        text,
        EXTRACTIVE,
        estimate_tokens([text]),
        estimate_tokens([turn.content for turn in turns]),
    )


class Failing:
    """A provider that raises ``error`` whenever it is asked for a summary."""

    name = "failing model"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def summarise(self, turns, *, unverified=False):
        raise self.error


def test_the_models_summary_is_used_when_it_answers():
    provider = Answering("  The user is planning a spring trip to Lisbon.\n")
    summary = summarise(provider, TURNS)
    # Its sizes are the counts the model reported: what it wrote, and all it read.
    assert summary == Summary("The user is planning a spring trip to Lisbon.", MODEL, 90, 1500)
    assert provider.asked == [list(TURNS)]


def test_a_summary_cut_off_at_its_length_limit_is_not_used(llm):
    summary = summarise(Answering("Goal: Lisbon. Done so far: tram", MAX_TOKENS), TURNS)
    assert summary == extractive(llm, TURNS)


@pytest.mark.parametrize(
    "error",
    [
        ModelError("failed"),
        ModelBusy("overloaded"),
        ModelMisconfigured("bad key"),
        ModelStreamBroken("dropped", request_id="req_1"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_model_error_falls_back_to_the_local_extractive_summary(llm, error):
    summary = summarise(Failing(error), TURNS)
    assert summary == extractive(llm, TURNS)
    # The fallback still carries the conversation's goal, so a new session can start from it.
    assert "Plan a trip to Lisbon in spring." in summary.text


@pytest.mark.parametrize("blank", ["", " ", "\n\t  \n"])
def test_a_blank_answer_falls_back_to_the_local_extractive_summary(llm, blank):
    provider = Answering(blank)
    summary = summarise(provider, TURNS)
    assert summary == extractive(llm, TURNS)
    assert provider.asked == [list(TURNS)]


def test_the_fallback_summarises_the_turns_it_was_given(llm):
    """Not a canned text: another conversation gets another summary."""
    other = (Turn("user", "Help me write a cover letter."),)
    first = summarise(Failing(ModelBusy("busy")), TURNS)
    second = summarise(Failing(ModelBusy("busy")), other)
    assert second == extractive(llm, other)
    assert first.text != second.text


def test_an_error_that_is_not_the_models_is_not_hidden():
    """Only a model failure falls back: a bug in the provider must surface, not be masked."""
    with pytest.raises(RuntimeError, match="bug"):
        summarise(Failing(RuntimeError("bug")), TURNS)


@pytest.mark.parametrize("chars", [0, 1, 4, 40, 400, 4000, 40_000])
def test_estimate_is_about_four_characters_a_token(chars):
    assert abs(estimate_tokens(["x" * chars]) - chars / 4) <= 1


def test_estimate_grows_with_the_text():
    # Ten words (50 characters) more each time: about a dozen tokens more each time.
    estimates = [estimate_tokens(["word " * words]) for words in range(0, 200, 10)]
    assert all(smaller < larger for smaller, larger in pairwise(estimates))


@given(texts=st.lists(st.text(max_size=300), max_size=10), more=st.text(min_size=1))
def test_estimate_counts_every_text_and_never_shrinks_as_one_is_added(texts, more):
    total = sum(len(text) for text in texts)
    assert abs(estimate_tokens(texts) - total / 4) <= 1
    assert estimate_tokens([*texts, more]) >= estimate_tokens(texts)
    assert estimate_tokens(["".join(texts)]) == estimate_tokens(texts)
