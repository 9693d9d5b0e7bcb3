"""The Claude provider against the fake Messages API: errors become what the page needs."""

from dataclasses import dataclass

import pytest

from tests.fake_anthropic import Drop, Hang, Status, StreamError
from webapp.llm import ModelBusy, ModelMisconfigured, ModelStreamBroken
from webapp.llm.claude import SUMMARY_PROMPT, ClaudeProvider


@dataclass
class Turn:
    role: str
    content: str


TURNS = [Turn("user", "Plan a picnic")]


def provider(fake, max_retries=0, timeout=5.0):
    return ClaudeProvider(
        api_key="test-key",
        base_url=fake.url,
        model="claude-test",
        summary_model="claude-test-summary",
        system_prompt="Be brief.",
        max_tokens=100,
        timeout=timeout,
        max_retries=max_retries,
    )


def test_streams_the_reply_in_chunks(fake_anthropic):
    chunks = list(provider(fake_anthropic).stream_reply(TURNS))
    assert len(chunks) > 1
    assert "".join(chunks) == "Echo: Plan a picnic"


def test_the_sdk_retries_overload_itself_and_nothing_retries_on_top(fake_anthropic):
    fake_anthropic.enqueue(*[Status(529, retry_after_ms=1)] * 3)
    with pytest.raises(ModelBusy) as raised:
        list(provider(fake_anthropic, max_retries=2).stream_reply(TURNS))
    assert len(fake_anthropic.requests) == 3  # the first try and the SDK's two retries
    assert raised.value.request_id.startswith("req_fake_")


@pytest.mark.parametrize("status", [429, 500, 529])
def test_busy_statuses_are_busy(fake_anthropic, status):
    fake_anthropic.enqueue(Status(status))
    with pytest.raises(ModelBusy):
        list(provider(fake_anthropic).stream_reply(TURNS))


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_refusals_only_the_operator_can_fix_are_misconfigured(fake_anthropic, status):
    fake_anthropic.enqueue(Status(status))
    with pytest.raises(ModelMisconfigured):
        list(provider(fake_anthropic, max_retries=2).stream_reply(TURNS))
    assert len(fake_anthropic.requests) == 1


def test_an_error_event_after_some_text_is_a_broken_stream(fake_anthropic):
    fake_anthropic.enqueue(StreamError(after=2))
    received = []
    with pytest.raises(ModelStreamBroken):
        for chunk in provider(fake_anthropic, max_retries=2).stream_reply(TURNS):
            received.append(chunk)
    assert "".join(received) == "Echo: Plan "
    assert len(fake_anthropic.requests) == 1  # never retried: the partial text is kept


def test_an_error_event_before_any_text_is_busy(fake_anthropic):
    fake_anthropic.enqueue(StreamError(after=0))
    with pytest.raises(ModelBusy):
        list(provider(fake_anthropic).stream_reply(TURNS))


def test_a_dropped_connection_mid_stream_is_a_broken_stream(fake_anthropic):
    fake_anthropic.enqueue(Drop(after=2))
    with pytest.raises(ModelStreamBroken):
        list(provider(fake_anthropic).stream_reply(TURNS))


def test_a_hung_api_is_busy_after_the_timeout(fake_anthropic):
    fake_anthropic.enqueue(Hang())
    with pytest.raises(ModelBusy):
        list(provider(fake_anthropic, timeout=0.3).stream_reply(TURNS))


def test_continuing_prefills_the_partial_without_trailing_space(fake_anthropic):
    list(provider(fake_anthropic).stream_reply(TURNS, prefix="Bring a blanket and "))
    messages = fake_anthropic.requests[-1].body["messages"]
    assert messages[-1] == {"role": "assistant", "content": "Bring a blanket and"}


def test_summarise_uses_the_summary_model_and_the_restore_prompt(fake_anthropic):
    fake_anthropic.reply_text = "Goal: a picnic."
    summary = provider(fake_anthropic).summarise([*TURNS, Turn("assistant", "Sure.")])
    assert summary == "Goal: a picnic."
    body = fake_anthropic.requests[-1].body
    assert (body["model"], body["system"]) == ("claude-test-summary", SUMMARY_PROMPT)
    assert "USER: Plan a picnic" in body["messages"][0]["content"]
    assert not body.get("stream")
