"""The Claude provider against the strict fake Messages API: what it sends (no prefill,
thinking, caching), what it reads (stop reasons, usage, thinking), and errors become what
the page needs."""

import logging
from dataclasses import dataclass

import pytest

from tests.fake_anthropic import (
    Drop,
    Hang,
    MaxTokens,
    Refusal,
    SpendLimit,
    Status,
    StreamError,
    carrying_on,
)
from webapp.llm import (
    END_TURN,
    MAX_TOKENS,
    REFUSAL,
    Finished,
    ModelBusy,
    ModelMisconfigured,
    ModelSpendLimit,
    ModelStreamBroken,
    ModelUnavailable,
    Thinking,
)
from webapp.llm.claude import SUMMARY_PROMPT, ClaudeProvider


@dataclass
class Turn:
    role: str
    content: str


TURNS = [Turn("user", "Plan a picnic")]
MODEL, SUMMARY_MODEL = "claude-sonnet-5-5", "claude-haiku-5-5"


def provider(fake, max_retries=0, timeout=5.0, **settings):
    return ClaudeProvider(
        api_key="test-key",
        base_url=fake.url,
        **{
            "model": MODEL,
            "summary_model": SUMMARY_MODEL,
            "system_prompt": "Be brief.",
            "max_tokens": 100,
            "thinking_effort": "high",
            "summary_max_tokens": 200,
            "prompt_cache_ttl": "5m",
            "timeout": timeout,
            "summary_timeout": timeout,
            "max_retries": max_retries,
            **settings,
        },
    )


def texts(events):
    return [event for event in events if isinstance(event, str)]


def test_streams_the_reply_in_chunks_then_its_end(fake_anthropic):
    *events, end = provider(fake_anthropic).stream_reply(TURNS)
    assert len(texts(events)) > 1
    assert "".join(texts(events)) == "Echo: Plan a picnic"
    assert isinstance(end, Finished)
    assert (end.stop_reason, end.model) == (END_TURN, MODEL)
    assert end.usage.output_tokens > 0


def test_thinking_is_told_once_and_never_given_as_text(fake_anthropic):
    fake_anthropic.thinking = "SECRET reasoning about blankets"
    events = list(provider(fake_anthropic).stream_reply(TURNS))
    assert events[0] == Thinking()
    assert "SECRET" not in "".join(texts(events))
    body = fake_anthropic.message_requests[-1].body
    assert body["thinking"] == {"type": "adaptive", "display": "omitted"}
    assert body["output_config"] == {"effort": "high"}


def test_a_reply_cut_off_at_its_length_limit_says_so(fake_anthropic):
    fake_anthropic.enqueue(MaxTokens(after=2))
    *events, end = provider(fake_anthropic).stream_reply(TURNS)
    assert "".join(texts(events)) == "Echo: Plan "
    assert end.stop_reason == MAX_TOKENS


def test_thinking_counts_toward_the_length_limit(fake_anthropic):
    fake_anthropic.thinking = "word " * 50
    fake_anthropic.reply_text = "answer " * 80
    *events, end = provider(fake_anthropic, max_tokens=100).stream_reply(TURNS)
    assert end.stop_reason == MAX_TOKENS
    assert len(texts(events)) < 80


def test_a_refusal_says_so_with_no_text(fake_anthropic):
    fake_anthropic.enqueue(Refusal())
    *events, end = provider(fake_anthropic).stream_reply(TURNS)
    assert texts(events) == []
    assert end.stop_reason == REFUSAL


def test_continue_ends_with_a_user_turn_asking_to_carry_on_from_the_last_words(fake_anthropic):
    fake_anthropic.reply_text = carrying_on("Bring a blanket and a basket of bread.")
    events = list(provider(fake_anthropic).stream_reply(TURNS, partial="Bring a blanket and "))
    assert "".join(texts(events)) == " a basket of bread."
    messages = fake_anthropic.message_requests[-1].body["messages"]
    assert messages[-2] == {"role": "assistant", "content": "Bring a blanket and"}
    assert messages[-1]["role"] == "user"
    assert "“Bring a blanket and”" in messages[-1]["content"]


def test_the_conversation_so_far_is_cached_and_the_next_turn_reads_it(fake_anthropic):
    fake_anthropic.min_cacheable_tokens = 0
    claude = provider(fake_anthropic)
    *_, first = claude.stream_reply(TURNS)
    turns = [*TURNS, Turn("assistant", "Echo: Plan a picnic"), Turn("user", "Where?")]
    *_, second = claude.stream_reply(turns)
    assert fake_anthropic.message_requests[-1].body["cache_control"] == {
        "type": "ephemeral",
        "ttl": "5m",
    }
    assert first.usage.cache_write_tokens > 0 and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens >= first.usage.cache_write_tokens


def test_caching_off_sends_no_cache_control(fake_anthropic):
    list(provider(fake_anthropic, prompt_cache_ttl="off").stream_reply(TURNS))
    assert "cache_control" not in fake_anthropic.message_requests[-1].body


def test_the_sdk_retries_overload_itself_and_nothing_retries_on_top(fake_anthropic):
    fake_anthropic.enqueue(*[Status(529, retry_after_ms=1)] * 3)
    with pytest.raises(ModelBusy) as raised:
        list(provider(fake_anthropic, max_retries=2).stream_reply(TURNS))
    assert len(fake_anthropic.message_requests) == 3  # the first try and the SDK's two retries
    assert raised.value.request_id.startswith("req_fake_")


@pytest.mark.parametrize("status", [429, 500, 529])
def test_busy_statuses_are_busy(fake_anthropic, status):
    fake_anthropic.enqueue(Status(status))
    with pytest.raises(ModelBusy):
        list(provider(fake_anthropic).stream_reply(TURNS))


@pytest.mark.parametrize("status", [400, 401, 403])
def test_refusals_only_the_operator_can_fix_are_misconfigured(fake_anthropic, status):
    fake_anthropic.enqueue(Status(status))
    with pytest.raises(ModelMisconfigured) as raised:
        list(provider(fake_anthropic, max_retries=2).stream_reply(TURNS))
    assert type(raised.value) is ModelMisconfigured
    assert len(fake_anthropic.message_requests) == 1


@pytest.mark.parametrize("model", ["claude-no-such-model", "retired"])
def test_an_unknown_or_retired_model_is_unavailable(fake_anthropic, model):
    if model == "retired":
        model = "claude-sonnet-4-5"
        fake_anthropic.retired.add(model)
    with pytest.raises(ModelUnavailable):
        list(provider(fake_anthropic, model=model).stream_reply(TURNS))


def test_the_models_are_checked_once_with_one_clear_line_each(fake_anthropic, caplog):
    fake_anthropic.retired.add("claude-haiku-4-5")
    claude = provider(fake_anthropic, model="claude-sonnet-9", summary_model="claude-haiku-4-5")
    with caplog.at_level(logging.ERROR, logger="webapp.llm.claude"):
        unavailable = claude.unavailable_models()
        assert claude.unavailable_models() is unavailable  # asked once
    assert set(unavailable) == {"ANTHROPIC_MODEL", "SUMMARY_MODEL"}
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert "FLASK_ANTHROPIC_MODEL is 'claude-sonnet-9'" in lines[0]
    assert "FLASK_SUMMARY_MODEL is 'claude-haiku-4-5', which is retired" in lines[1]
    looked_up = [r.path for r in fake_anthropic.requests if r.path.startswith("/v1/models/")]
    assert looked_up == ["/v1/models/claude-sonnet-9", "/v1/models/claude-haiku-4-5"]


def test_known_models_are_available(fake_anthropic):
    assert provider(fake_anthropic).unavailable_models() == {}


def test_a_spend_limit_says_so_rather_than_busy(fake_anthropic):
    fake_anthropic.enqueue(SpendLimit())
    with pytest.raises(ModelSpendLimit):
        list(provider(fake_anthropic).stream_reply(TURNS))


def test_an_error_event_after_some_text_is_a_broken_stream(fake_anthropic):
    fake_anthropic.enqueue(StreamError(after=2))
    received = []
    with pytest.raises(ModelStreamBroken):
        for event in provider(fake_anthropic, max_retries=2).stream_reply(TURNS):
            received.append(event)
    assert "".join(texts(received)) == "Echo: Plan "
    assert len(fake_anthropic.message_requests) == 1  # never retried: the partial is kept


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


def test_summarise_uses_the_summary_model_low_effort_and_the_restore_prompt(fake_anthropic):
    fake_anthropic.reply_text = "Goal: a picnic."
    summary = provider(fake_anthropic).summarise([*TURNS, Turn("assistant", "Sure.")])
    assert (summary.text, summary.stop_reason) == ("Goal: a picnic.", END_TURN)
    assert summary.usage.prompt_tokens > 0 and summary.usage.output_tokens > 0
    body = fake_anthropic.message_requests[-1].body
    assert (body["model"], body["system"]) == (SUMMARY_MODEL, SUMMARY_PROMPT)
    assert body["output_config"] == {"effort": "low"}
    assert "USER: Plan a picnic" in body["messages"][0]["content"]
    assert not body.get("stream")


def test_a_summary_cut_off_reports_it(fake_anthropic):
    fake_anthropic.enqueue(MaxTokens(after=1))
    assert provider(fake_anthropic).summarise(TURNS).stop_reason == MAX_TOKENS


def test_tokens_are_counted_by_the_api(fake_anthropic):
    counted = provider(fake_anthropic).count_tokens(TURNS, note="We met before.")
    assert counted > 0
    assert fake_anthropic.requests[-1].path == "/v1/messages/count_tokens"
