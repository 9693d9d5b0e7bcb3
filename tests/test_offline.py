"""The offline model: deterministic, streaming, and about what the user said."""

from dataclasses import dataclass

from webapp.llm import END_TURN, Finished
from webapp.llm.offline import OfflineProvider, estimate_tokens


@dataclass
class Turn:
    role: str
    content: str


CONVERSATION = [
    Turn("user", "I want to plan a vegetable garden. It gets morning sun only."),
    Turn("assistant", "Leafy greens do well with partial sun. Try lettuce and chard."),
    Turn("user", "What about tomatoes?"),
]


def test_reply_streams_in_several_chunks_that_join_to_the_whole_then_ends():
    provider = OfflineProvider()
    *chunks, end = provider.stream_reply(CONVERSATION)
    assert len(chunks) > 3
    assert "".join(chunks) == provider.reply_text(CONVERSATION)
    assert isinstance(end, Finished) and end.stop_reason == END_TURN
    assert end.usage.output_tokens == estimate_tokens(["".join(chunks)])


def test_carrying_on_writes_the_rest_of_the_same_reply():
    provider = OfflineProvider()
    whole = provider.reply_text(CONVERSATION)
    partial = whole[:30]
    *rest, _ = provider.stream_reply(CONVERSATION, partial=partial)
    assert partial + "".join(rest) == whole


def test_reply_is_deterministic_and_refers_to_the_user():
    provider = OfflineProvider()
    reply = provider.reply_text(CONVERSATION)
    assert reply == OfflineProvider().reply_text(CONVERSATION)
    assert "What about tomatoes?" in reply
    assert "I want to plan a vegetable garden." in reply
    assert "message 2 of our conversation" in reply


def test_summary_is_extractive_with_the_goal_first():
    summary = OfflineProvider().summarise(CONVERSATION)
    assert summary.stop_reason == END_TURN
    lines = summary.text.splitlines()
    assert lines[0] == "Goal: I want to plan a vegetable garden."
    assert "- Assistant: Leafy greens do well with partial sun." in lines
    assert lines[-1] == "- User: What about tomatoes?"


def test_summary_of_a_long_conversation_is_bounded_and_keeps_goal_and_latest():
    turns = [Turn("user", "Goal sentence here.")] + [
        Turn("user" if i % 2 else "assistant", f"Point number {i} is made.") for i in range(500)
    ]
    summary = OfflineProvider().summarise(turns).text
    assert len(summary) <= 2100
    assert summary.startswith("Goal: Goal sentence here.")
    assert summary.endswith("Point number 499 is made.")
