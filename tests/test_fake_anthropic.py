"""The fake Anthropic API, driven by the real SDK: proof that it speaks the wire format."""

import threading
import time
import typing

import anthropic
import httpx2
import pytest
from anthropic.types import Message

from tests.fake_anthropic import (
    KNOWN_MODELS,
    NOT_THE_BEGINNING,
    PREFILL_MESSAGE,
    Drop,
    FakeAnthropic,
    Hang,
    MaxTokens,
    RecordedRequest,
    Refusal,
    SpendLimit,
    Status,
    StreamError,
    carrying_on,
    tokens,
)
from webapp.llm import carry_on_request

MODEL = "claude-sonnet-5-5"
MESSAGES = [
    {"role": "user", "content": "first"},
    {"role": "assistant", "content": "ok"},
    {"role": "user", "content": "Hello there, Claude"},
]
REQUEST = {"model": MODEL, "system": "Be terse.", "max_tokens": 64, "messages": MESSAGES}
REPLY = ["Echo: ", "Hello ", "there, ", "Claude"]
THOUGHT = ["Let ", "me ", "think ", "this ", "through."]
LONG = "A long and stable system prompt. " * 200  # well over 1024 tokens of the fake's count


@pytest.fixture
def fake():
    with FakeAnthropic() as server:
        yield server


def connect(fake, max_retries=0, timeout=5.0):
    return anthropic.Anthropic(
        api_key="test-key", base_url=fake.url, max_retries=max_retries, timeout=timeout
    )


def read_stream(client, received, **request):
    """Streams a reply into `received`, so that a test sees the text that came before an error."""
    with client.messages.stream(**{**REQUEST, **request}) as stream:
        for text in stream.text_stream:
            received.append(text)
        return stream, stream.get_final_message()


def trace(client, **request):
    """The stream's raw events, in short, and the SDK's final message."""
    events = []
    with client.messages.stream(**{**REQUEST, **request}) as stream:
        for event in stream:
            if event.type == "content_block_start":
                events.append(("start", event.index, event.content_block.type))
            elif event.type == "content_block_delta":
                delta = event.delta
                value = getattr(delta, "text", None) or getattr(delta, "thinking", None)
                events.append((delta.type, event.index, value))
            elif event.type == "content_block_stop":
                events.append(("stop", event.index))
            elif event.type == "message_delta":
                events.append(("message_delta", event.delta.stop_reason, event.usage))
            elif event.type in ("message_start", "message_stop"):
                events.append((event.type,))
        return events, stream.get_final_message()


def kinds(message):
    return [block.type for block in message.content]


def text_of(message):
    return "".join(block.text for block in message.content if block.type == "text")


# The wire format and the SDK's retries.


def test_a_stream_yields_the_reply_word_by_word(fake):
    received = []
    stream, message = read_stream(connect(fake), received)
    assert received == REPLY
    assert text_of(message) == "Echo: Hello there, Claude"
    assert (message.stop_reason, message.model, message.usage.output_tokens) == (
        "end_turn",
        MODEL,
        len(THOUGHT) + len(REPLY),
    )
    assert stream.request_id == "req_fake_1"


def test_the_request_is_recorded_with_its_headers_and_path(fake):
    read_stream(connect(fake), [])
    [request] = fake.requests
    assert {key: request.body[key] for key in REQUEST} == REQUEST
    assert request.body["stream"] is True
    assert request.path == "/v1/messages"
    # anthropic 2.11 sends the API key as a bearer token, not as x-api-key.
    assert request.headers["authorization"] == "Bearer test-key"
    assert "x-api-key" not in request.headers
    assert request.headers["anthropic-version"]


def test_a_recorded_request_built_without_a_path_is_a_message_request():
    assert RecordedRequest({}, {}).path == "/v1/messages"


def test_a_non_streaming_request_gets_a_complete_message(fake):
    message = connect(fake).messages.create(**REQUEST)
    assert kinds(message) == ["thinking", "text"]
    assert text_of(message) == "Echo: Hello there, Claude"
    assert (message.stop_reason, message.model) == ("end_turn", MODEL)
    assert message._request_id == "req_fake_1"
    assert "stream" not in fake.requests[0].body


def test_the_reply_can_be_a_text_or_a_function_of_the_request(fake):
    client = connect(fake)
    fake.reply_text = "Fixed  reply\n"
    assert text_of(client.messages.create(**REQUEST)) == "Fixed  reply\n"
    fake.reply_text = lambda body: body["system"]
    received = []
    read_stream(client, received)
    assert received == ["Be ", "terse."]


@pytest.mark.parametrize("text", ["", "one", "  two  words\n", "a\tb \n c "])
def test_tokens_join_to_the_text(text):
    assert "".join(tokens(text)) == text


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (403, anthropic.PermissionDeniedError),
        (404, anthropic.NotFoundError),
        (413, anthropic.ContentTooLargeError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
def test_each_status_raises_the_sdks_class_for_it(fake, status, error_class):
    fake.enqueue(Status(status))
    with pytest.raises(anthropic.APIStatusError) as caught:
        read_stream(connect(fake), [])
    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    assert caught.value.request_id == "req_fake_1"
    assert caught.value.body["request_id"] == "req_fake_1"


def test_overloaded_is_retried_then_raised(fake):
    fake.behaviour = Status(529, retry_after_ms=1)
    started = time.monotonic()
    with pytest.raises(anthropic.OverloadedError) as caught:
        read_stream(connect(fake, max_retries=2), [])
    assert time.monotonic() - started < 0.5  # retry-after-ms replaced the SDK's backoff
    assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1", "2"]
    error = caught.value
    assert (error.status_code, error.request_id, error.type) == (
        529,
        "req_fake_3",
        "overloaded_error",
    )
    assert error.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_fake_3",
    }


def test_a_retry_that_succeeds_gets_the_reply(fake):
    fake.enqueue(Status(429, retry_after="0.01"))
    received = []
    read_stream(connect(fake, max_retries=1), received)
    assert received == REPLY
    assert len(fake.requests) == 2


def test_should_retry_false_stops_the_sdks_retries(fake):
    fake.behaviour = Status(529, should_retry=False)
    with pytest.raises(anthropic.OverloadedError):
        read_stream(connect(fake, max_retries=2), [])
    assert len(fake.requests) == 1


def test_authentication_errors_are_not_retried(fake):
    fake.behaviour = Status(401)
    with pytest.raises(anthropic.AuthenticationError):
        read_stream(connect(fake, max_retries=2), [])
    assert len(fake.requests) == 1


def test_an_error_event_mid_stream_raises_while_iterating(fake):
    fake.enqueue(StreamError(after=2))
    received = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        read_stream(connect(fake, max_retries=2), received)
    assert received == REPLY[:2]
    error = caught.value
    # The HTTP status was 200, which no subclass claims: the SDK raises the base class.
    assert type(error) is anthropic.APIStatusError
    assert (error.status_code, error.request_id, error.type) == (
        200,
        "req_fake_1",
        "overloaded_error",
    )
    assert error.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert len(fake.requests) == 1


def test_an_error_event_on_a_non_streaming_request_is_its_status(fake):
    fake.enqueue(StreamError())
    with pytest.raises(anthropic.OverloadedError):
        connect(fake).messages.create(**REQUEST)


def test_a_hang_before_the_response_times_out(fake):
    fake.enqueue(Hang())
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        read_stream(connect(fake, timeout=1.0), [])
    assert 1.0 <= time.monotonic() - started < 2.0


def test_a_hang_mid_stream_times_out_as_an_httpx_error(fake):
    fake.enqueue(Hang(after=1))
    received = []
    # The SDK wraps timeouts only while it waits for the headers; after them, httpx's own.
    with pytest.raises(httpx2.ReadTimeout):
        read_stream(connect(fake, timeout=0.3), received)
    assert received == REPLY[:1]


def test_a_released_hang_carries_on(fake):
    fake.enqueue(Hang(after=2))
    received = []
    with connect(fake).messages.stream(**REQUEST) as stream:
        for text in stream.text_stream:
            received.append(text)
            if len(received) == 2:
                fake.release()
    assert received == REPLY


def test_a_drop_mid_stream_is_an_incomplete_body(fake):
    fake.enqueue(Drop(after=2))
    received = []
    with pytest.raises(httpx2.RemoteProtocolError):
        read_stream(connect(fake, max_retries=2), received)
    assert received == REPLY[:2]
    assert len(fake.requests) == 1


def test_a_drop_before_the_response_is_retried(fake):
    fake.enqueue(Drop())
    received = []
    read_stream(connect(fake, max_retries=1), received)
    assert received == REPLY
    assert len(fake.requests) == 2


def test_stop_cuts_a_hanging_stream():
    fake = FakeAnthropic()
    fake.enqueue(Hang(after=1))
    received, errors = [], []

    def reader():
        try:
            read_stream(connect(fake), received)
        except httpx2.RemoteProtocolError as error:
            errors.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    deadline = time.monotonic() + 2
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    fake.stop()
    thread.join(timeout=2)
    assert time.monotonic() - started < 1.0
    assert received == REPLY[:1]
    assert len(errors) == 1


def test_token_delay_spaces_the_deltas(fake):
    fake.token_delay = 0.05
    started = time.monotonic()
    read_stream(connect(fake), [])
    # Eight gaps between nine deltas: five thinking, four text.
    assert time.monotonic() - started >= 0.4


def test_other_paths_are_not_found_with_a_request_id(fake):
    client = connect(fake)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.post("/v1/complete", body={"prompt": "hi"}, cast_to=object)
    with pytest.raises(anthropic.NotFoundError) as caught_get:
        client.get("/v1/files", cast_to=object)
    assert (caught.value.request_id, caught_get.value.request_id) == ("req_fake_1", "req_fake_2")
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Not found"},
        "request_id": "req_fake_1",
    }
    assert [request.path for request in fake.requests] == ["/v1/complete", "/v1/files"]


# What the API refuses.


def bad_request(call):
    with pytest.raises(anthropic.BadRequestError) as caught:
        call()
    error = caught.value
    assert error.type == "invalid_request_error"
    assert error.request_id and error.body["request_id"] == error.request_id
    return error.api_message


PREFILLED = [*MESSAGES, {"role": "assistant", "content": "Echo:"}]


def test_a_conversation_ending_with_the_assistant_is_refused(fake):
    client = connect(fake)
    assert bad_request(lambda: client.messages.create(**{**REQUEST, "messages": PREFILLED})) == (
        PREFILL_MESSAGE
    )
    assert bad_request(lambda: read_stream(client, [], messages=PREFILLED)) == PREFILL_MESSAGE
    count = client.messages.count_tokens
    assert bad_request(lambda: count(model=MODEL, messages=PREFILLED)) == PREFILL_MESSAGE
    assert len(fake.requests) == 3


def test_a_refused_request_leaves_the_scripted_behaviours_alone(fake):
    client = connect(fake)
    fake.enqueue(Status(529))
    bad_request(lambda: client.messages.create(**{**REQUEST, "messages": PREFILLED}))
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(**REQUEST)


def test_max_tokens_is_required(fake):
    client = connect(fake)
    body = {key: value for key, value in REQUEST.items() if key != "max_tokens"}
    message = bad_request(lambda: client.post("/v1/messages", body=body, cast_to=Message))
    assert message == "max_tokens: Field required"


@pytest.mark.parametrize("max_tokens", [0, -1, "64", 6.5, True])
def test_max_tokens_must_be_a_positive_integer(fake, max_tokens):
    client = connect(fake)
    message = bad_request(lambda: client.messages.create(**{**REQUEST, "max_tokens": max_tokens}))
    assert message.startswith("max_tokens: ")


@pytest.mark.parametrize(
    "thinking",
    [
        {"type": "adaptive"},
        {"type": "adaptive", "display": "summarized"},
        {"type": "adaptive", "display": "omitted"},
        {"type": "disabled"},
        {"type": "enabled", "budget_tokens": 1024},
        {"type": "enabled", "budget_tokens": 2047, "display": "omitted"},
        {"type": "between_tools"},  # in the SDK's ThinkingConfigParam
    ],
)
def test_the_thinking_configurations_of_the_api_are_accepted(fake, thinking):
    client = connect(fake)
    message = client.messages.create(**{**REQUEST, "max_tokens": 2048, "thinking": thinking})
    assert message.stop_reason == "end_turn"
    assert client.messages.count_tokens(model=MODEL, messages=MESSAGES, thinking=thinking)


@pytest.mark.parametrize(
    ("thinking", "message"),
    [
        ({"type": "adaptive", "display": "full"}, "thinking.adaptive.display: "),
        ({"type": "adaptive", "budget_tokens": 2000}, "thinking.adaptive.budget_tokens: "),
        ({"type": "enabled"}, "thinking.enabled.budget_tokens: "),
        ({"type": "enabled", "budget_tokens": 1023}, "thinking.enabled.budget_tokens: "),
        ({"type": "enabled", "budget_tokens": 2048}, "`max_tokens` must be greater than"),
        ({"type": "disabled", "display": "omitted"}, "thinking.disabled.display: "),
        ({"type": "auto"}, "thinking.type: "),
        ("adaptive", "thinking.type: "),
    ],
)
def test_other_thinking_configurations_are_refused(fake, thinking, message):
    client = connect(fake)
    request = {**REQUEST, "max_tokens": 2048, "thinking": thinking}
    assert bad_request(lambda: client.messages.create(**request)).startswith(message)


def test_count_tokens_has_no_max_tokens_to_compare_the_budget_with(fake):
    client = connect(fake)
    big = {"type": "enabled", "budget_tokens": 100_000}
    assert client.messages.count_tokens(model=MODEL, messages=MESSAGES, thinking=big)
    small = {"type": "enabled", "budget_tokens": 1000}
    message = bad_request(
        lambda: client.messages.count_tokens(model=MODEL, messages=MESSAGES, thinking=small)
    )
    assert message.startswith("thinking.enabled.budget_tokens: ")


@pytest.mark.parametrize("effort", ["low", "medium", "high", "xhigh", "max", None])
def test_the_efforts_of_the_api_are_accepted(fake, effort):
    message = connect(fake).messages.create(**REQUEST, output_config={"effort": effort})
    assert message.stop_reason == "end_turn"


@pytest.mark.parametrize("effort", ["minimal", "extreme", "HIGH", 3])
def test_other_efforts_are_refused(fake, effort):
    client = connect(fake)
    message = bad_request(
        lambda: client.messages.create(**REQUEST, output_config={"effort": effort})
    )
    assert message == (
        "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
    )


@pytest.mark.parametrize(
    "cache_control",
    [{"type": "persistent"}, {"type": "ephemeral", "ttl": "10m"}, {"type": "ephemeral", "x": 1}],
)
def test_a_malformed_cache_control_is_refused(fake, cache_control):
    client = connect(fake)
    bad_request(lambda: client.messages.create(**REQUEST, cache_control=cache_control))


def test_at_most_four_cache_breakpoints_are_allowed(fake):
    client = connect(fake)
    marked = {"type": "ephemeral"}
    system = [{"type": "text", "text": f"Rule {n}.", "cache_control": marked} for n in range(4)]
    assert client.messages.create(**{**REQUEST, "system": system})
    message = bad_request(
        lambda: client.messages.create(**{**REQUEST, "system": system}, cache_control=marked)
    )
    assert message == "A maximum of 4 blocks with cache_control may be provided. Found 5."


# Models.


def test_the_known_models_are_the_sdks_model_literals():
    literal, _ = typing.get_args(anthropic.types.Model)
    assert typing.get_args(literal) == KNOWN_MODELS
    assert "claude-sonnet-5-5" in KNOWN_MODELS


def not_found(call):
    with pytest.raises(anthropic.NotFoundError) as caught:
        call()
    error = caught.value
    assert error.type == "not_found_error"
    assert error.request_id and error.body["request_id"] == error.request_id
    return error.api_message


def test_an_unknown_model_is_not_found(fake):
    client = connect(fake)
    assert not_found(lambda: client.messages.create(**{**REQUEST, "model": "claude-test"})) == (
        "model: claude-test"
    )
    assert not_found(lambda: read_stream(client, [], model="claude-3-opus")) == (
        "model: claude-3-opus"
    )
    count = client.messages.count_tokens
    assert not_found(lambda: count(model="gpt-5", messages=MESSAGES)) == "model: gpt-5"


def test_a_retired_model_is_not_found_for_inference(fake):
    client = connect(fake)
    fake.retired = {MODEL}
    assert not_found(lambda: client.messages.create(**REQUEST)) == f"model: {MODEL}"
    assert not_found(lambda: client.messages.count_tokens(model=MODEL, messages=MESSAGES))
    assert text_of(client.messages.create(**{**REQUEST, "model": "claude-opus-5-5"}))


def test_a_known_model_has_its_model_info(fake):
    info = connect(fake).models.retrieve("claude-sonnet-5-5")
    assert (info.id, info.type, info.display_name, info.lifecycle, info.line) == (
        "claude-sonnet-5-5",
        "model",
        "Claude Sonnet 5.5",
        "active",
        "sonnet",
    )
    assert (info.deprecated_at, info.retires_at) == (None, None)
    assert info.created_at.year == 1970  # release date unknown: the documented epoch value
    [request] = fake.requests
    assert (request.path, request.body) == ("/v1/models/claude-sonnet-5-5", {})
    assert info._request_id == "req_fake_1"


def test_an_alias_resolves_to_its_dated_model(fake):
    info = connect(fake).models.retrieve("claude-haiku-4-5")
    assert (info.id, info.display_name) == ("claude-haiku-4-5-20251001", "Claude Haiku 4.5")
    assert info.created_at.date().isoformat() == "2025-10-01"


def test_a_retired_model_stays_in_the_catalogue(fake):
    fake.retired.add("claude-opus-4-5")
    client = connect(fake)
    for name in ("claude-opus-4-5", "claude-opus-4-5-20251101"):
        info = client.models.retrieve(name)
        assert (info.id, info.lifecycle) == ("claude-opus-4-5-20251101", "retired")
        assert info.deprecated_at is not None and info.retires_at is not None
        assert not_found(lambda name=name: client.messages.create(**{**REQUEST, "model": name}))


def test_an_unknown_model_has_no_model_info(fake):
    client = connect(fake)
    assert not_found(lambda: client.models.retrieve("claude-test")) == "model: claude-test"
    assert fake.requests[0].path == "/v1/models/claude-test"


# Thinking.


def test_a_stream_thinks_first(fake):
    events, message = trace(connect(fake))
    signature = message.content[0].signature
    assert events[:-2] == [
        ("message_start",),
        ("start", 0, "thinking"),
        *[("thinking_delta", 0, word) for word in THOUGHT],
        ("signature_delta", 0, None),
        ("stop", 0),
        ("start", 1, "text"),
        *[("text_delta", 1, word) for word in REPLY],
        ("stop", 1),
    ]
    assert events[-2][:2] == ("message_delta", "end_turn")
    assert events[-1] == ("message_stop",)
    assert kinds(message) == ["thinking", "text"]
    assert message.content[0].thinking == "Let me think this through."
    assert signature and signature != message.content[0].thinking
    assert message.usage.output_tokens_details.thinking_tokens == len(THOUGHT)


def test_the_sdk_reports_thinking_and_signature_events(fake):
    with connect(fake).messages.stream(**REQUEST) as stream:
        derived = [event.type for event in stream if event.type in ("thinking", "signature")]
    assert derived == ["thinking"] * len(THOUGHT) + ["signature"]


def test_omitted_thinking_streams_only_its_signature(fake):
    events, message = trace(connect(fake), thinking={"type": "adaptive", "display": "omitted"})
    assert events[1:4] == [("start", 0, "thinking"), ("signature_delta", 0, None), ("stop", 0)]
    assert (message.content[0].thinking, bool(message.content[0].signature)) == ("", True)
    assert message.usage.output_tokens == len(THOUGHT) + len(REPLY)  # thinking is still billed


def test_the_default_display_can_be_omitted(fake):
    fake.thinking_display = "omitted"
    events, _ = trace(connect(fake), thinking={"type": "adaptive"})
    assert not [event for event in events if event[0] == "thinking_delta"]
    events, _ = trace(connect(fake), thinking={"type": "adaptive", "display": "summarized"})
    assert len([event for event in events if event[0] == "thinking_delta"]) == len(THOUGHT)


@pytest.mark.parametrize("thinking", [{"type": "disabled"}, {"type": "between_tools"}])
def test_without_thinking_the_text_block_comes_first(fake, thinking):
    events, message = trace(connect(fake), thinking=thinking)
    assert events[1] == ("start", 0, "text")
    assert kinds(message) == ["text"]
    assert message.usage.output_tokens == len(REPLY)


def test_a_fake_that_does_not_think(fake):
    fake.thinking = None
    client = connect(fake)
    assert kinds(client.messages.create(**REQUEST)) == ["text"]
    assert kinds(trace(client)[1]) == ["text"]


def test_a_non_streamed_reply_has_its_thinking_block_first(fake):
    message = connect(fake).messages.create(**REQUEST, thinking={"type": "adaptive"})
    thinking, text = message.content
    assert (thinking.type, thinking.thinking, text.text) == (
        "thinking",
        "Let me think this through.",
        "Echo: Hello there, Claude",
    )
    assert thinking.signature
    omitted = connect(fake).messages.create(
        **REQUEST, thinking={"type": "adaptive", "display": "omitted"}
    )
    assert (omitted.content[0].thinking, bool(omitted.content[0].signature)) == ("", True)


def test_thinking_counts_toward_max_tokens(fake):
    client = connect(fake)
    received = []
    _, message = read_stream(client, received, max_tokens=7)
    assert received == REPLY[:2]  # five thinking tokens, then two of text
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 7)
    message = client.messages.create(**{**REQUEST, "max_tokens": 7})
    assert (text_of(message), message.stop_reason) == ("Echo: Hello ", "max_tokens")


def test_thinking_can_use_the_whole_budget(fake):
    events, message = trace(connect(fake), max_tokens=3)
    assert kinds(message) == ["thinking"]  # no text block at all
    assert message.content[0].thinking == "Let me think "
    assert message.content[0].signature
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 3)
    assert ("start", 1, "text") not in events


def test_a_mid_stream_error_still_comes_when_thinking_used_the_whole_budget(fake):
    fake.enqueue(StreamError())
    with pytest.raises(anthropic.APIStatusError) as caught:
        trace(connect(fake), max_tokens=3)
    assert (caught.value.status_code, caught.value.type) == (200, "overloaded_error")


# Scripted stop reasons.


def test_max_tokens_stops_after_its_text_tokens(fake):
    client = connect(fake)
    fake.enqueue(MaxTokens(after=2), MaxTokens(after=1))
    received = []
    _, message = read_stream(client, received)
    assert received == REPLY[:2]
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 7)
    message = client.messages.create(**REQUEST)
    assert (kinds(message), text_of(message), message.stop_reason) == (
        ["thinking", "text"],
        "Echo: ",
        "max_tokens",
    )


def test_a_refusal_without_text_has_no_text_block(fake):
    fake.enqueue(Refusal())
    events, message = trace(connect(fake))
    assert [event[0] for event in events] == [
        "message_start",
        "start",
        *["thinking_delta"] * len(THOUGHT),
        "signature_delta",
        "stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2][1] == "refusal"
    assert kinds(message) == ["thinking"]
    assert message.stop_reason == "refusal"
    assert message.stop_details.type == "refusal"


def test_a_refusal_without_thinking_or_text_has_no_content(fake):
    fake.thinking = None
    fake.enqueue(Refusal(), Refusal(category="cyber", explanation="Declined."))
    client = connect(fake)
    events, message = trace(client)
    assert [event[0] for event in events] == ["message_start", "message_delta", "message_stop"]
    assert (message.content, message.stop_reason) == ([], "refusal")
    message = client.messages.create(**REQUEST)
    assert (message.content, message.stop_reason) == ([], "refusal")
    assert (message.stop_details.category, message.stop_details.explanation) == (
        "cyber",
        "Declined.",
    )


def test_a_refusal_can_come_after_some_text(fake):
    fake.behaviour = Refusal(after=3)
    client = connect(fake)
    received = []
    _, message = read_stream(client, received)
    assert received == REPLY[:3]
    assert (message.stop_reason, message.usage.output_tokens) == ("refusal", len(THOUGHT) + 3)
    message = client.messages.create(**REQUEST)
    assert (text_of(message), message.stop_reason) == ("Echo: Hello there, ", "refusal")


def test_message_delta_carries_the_stop_reason_and_usage(fake):
    events, message = trace(connect(fake))
    _, stop_reason, usage = events[-2]
    assert (stop_reason, usage.output_tokens) == ("end_turn", len(THOUGHT) + len(REPLY))
    assert usage.input_tokens == message.usage.input_tokens


# Prompt caching.


def usage_of(client, **request):
    return client.messages.create(**{**REQUEST, **request}).usage


def counted(client, **request):
    request = {**REQUEST, **request}
    count = client.messages.count_tokens(
        model=request["model"], system=request["system"], messages=request["messages"]
    )
    return count.input_tokens


def creation(usage):
    return (
        usage.cache_creation.ephemeral_5m_input_tokens,
        usage.cache_creation.ephemeral_1h_input_tokens,
    )


def test_without_cache_control_nothing_is_cached(fake):
    client = connect(fake)
    for _ in range(2):
        usage = usage_of(client, system=LONG)
        assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
        assert usage.input_tokens == counted(client, system=LONG) > 1024
        assert creation(usage) == (0, 0)


def test_top_level_cache_control_caches_the_conversation_as_it_grows(fake):
    client = connect(fake)
    automatic = {"type": "ephemeral"}
    first = [{"role": "user", "content": "Hello there, Claude"}]
    usage = usage_of(client, system=LONG, messages=first, cache_control=automatic)
    whole = counted(client, system=LONG, messages=first)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (0, whole)
    assert usage.input_tokens == 0  # the breakpoint is the last block: nothing follows it
    assert creation(usage) == (whole, 0)

    grown = [*first, {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "And?"}]
    usage = usage_of(client, system=LONG, messages=grown, cache_control=automatic)
    assert usage.cache_read_input_tokens == whole
    assert usage.cache_creation_input_tokens == counted(client, system=LONG, messages=grown) - whole
    assert usage.input_tokens == 0


def test_a_block_breakpoint_caches_up_to_it(fake):
    client = connect(fake)
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    total = counted(client, system=system)
    usage = usage_of(client, system=system)
    assert usage.cache_read_input_tokens == 0
    assert creation(usage) == (0, usage.cache_creation_input_tokens)
    assert usage.input_tokens + usage.cache_creation_input_tokens == total
    system_tokens = usage.cache_creation_input_tokens

    other = [{"role": "user", "content": "Something else entirely"}]
    usage = usage_of(client, system=system, messages=other)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (system_tokens, 0)
    assert usage.input_tokens == counted(client, system=system, messages=other) - system_tokens


def test_the_cache_key_ignores_the_markers_and_string_shorthand(fake):
    client = connect(fake)
    marked = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    first = usage_of(client, system=marked)
    # The same prompt, the system a string now and the breakpoint moved to the last message.
    usage = usage_of(client, system=LONG, cache_control={"type": "ephemeral"})
    assert usage.cache_read_input_tokens == first.cache_creation_input_tokens
    assert usage.cache_creation_input_tokens == first.input_tokens


def test_ttls_split_the_cache_creation(fake):
    client = connect(fake)
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    usage = usage_of(client, system=system, cache_control={"type": "ephemeral", "ttl": "5m"})
    messages_only = client.messages.count_tokens(model=MODEL, messages=MESSAGES).input_tokens
    # Up to the system prompt's breakpoint for an hour, the messages after it for five minutes.
    assert creation(usage) == (messages_only, counted(client, system=system) - messages_only)
    assert usage.cache_creation_input_tokens == counted(client, system=system)


def test_a_prompt_below_the_minimum_is_silently_not_cached(fake):
    client = connect(fake)
    automatic = {"type": "ephemeral"}
    for _ in range(2):
        usage = usage_of(client, cache_control=automatic)
        assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
        assert usage.input_tokens == counted(client)
    fake.min_cacheable_tokens = 10
    assert usage_of(client, cache_control=automatic).cache_creation_input_tokens == counted(client)
    assert usage_of(client, cache_control=automatic).cache_read_input_tokens == counted(client)


def test_the_cache_is_per_model_and_can_be_cleared(fake):
    client = connect(fake)
    automatic = {"type": "ephemeral"}
    usage_of(client, system=LONG, cache_control=automatic)
    other = usage_of(client, system=LONG, cache_control=automatic, model="claude-opus-5-5")
    assert (other.cache_read_input_tokens, other.cache_creation_input_tokens > 0) == (0, True)
    assert usage_of(client, system=LONG, cache_control=automatic).cache_read_input_tokens > 0
    fake.clear_cache()
    assert usage_of(client, system=LONG, cache_control=automatic).cache_read_input_tokens == 0


def test_a_stream_reports_cache_usage_at_its_start_and_the_sdk_merges_the_end(fake):
    client = connect(fake)
    request = {**REQUEST, "system": LONG, "cache_control": {"type": "ephemeral"}}
    client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        start = next(event for event in stream if event.type == "message_start")
        message = stream.get_final_message()
    assert start.message.usage.output_tokens == 1
    assert start.message.usage.cache_read_input_tokens == counted(client, system=LONG)
    assert start.message.usage.cache_creation.ephemeral_5m_input_tokens == 0
    usage = message.usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
        counted(client, system=LONG),
        0,
    )
    assert usage.output_tokens == len(THOUGHT) + len(REPLY)


# Token counting.


def test_count_tokens_counts_what_a_message_request_would_hold(fake):
    client = connect(fake)
    count = client.messages.count_tokens(model=MODEL, system="Be terse.", messages=MESSAGES)
    usage = usage_of(client)
    assert count.input_tokens == usage.input_tokens > 0
    assert count._request_id == "req_fake_1"
    assert fake.requests[0].path == "/v1/messages/count_tokens"
    assert "max_tokens" not in fake.requests[0].body


def test_count_tokens_takes_no_scripted_behaviour(fake):
    client = connect(fake)
    fake.enqueue(Status(529))
    assert client.messages.count_tokens(model=MODEL, messages=MESSAGES).input_tokens > 0
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(**REQUEST)


# The spend limit.


def test_a_spend_limit_is_a_rate_limit_error_with_its_code(fake):
    fake.enqueue(SpendLimit(), SpendLimit())
    client = connect(fake)
    for call in (lambda: client.messages.create(**REQUEST), lambda: read_stream(client, [])):
        with pytest.raises(anthropic.RateLimitError) as caught:
            call()
        error = caught.value
        # The SDK picks a subclass by (status, error_code).
        assert type(error) is anthropic.EnforcedSpendLimitReachedError
        assert error.status_code == 429
        assert error.body["error"]["type"] == "rate_limit_error"
        assert error.body["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
        assert error.error_code == "enforced_spend_limit_reached"
        assert "monthly spend limit" in error.api_message
        assert "retry-after" not in error.response.headers
        assert "retry-after-ms" not in error.response.headers
        assert error.response.headers["request-id"] == error.body["request_id"]


def test_the_sdk_retries_a_spend_limit_all_the_same(fake):
    fake.behaviour = SpendLimit()
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError):
        connect(fake, max_retries=1).messages.create(**REQUEST)
    # No retry-after, so the SDK waited its own backoff (0.5 s less jitter) for nothing.
    assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1"]


# Carrying on a reply cut short.

WHOLE = "Bring a blanket and a flask of tea, then find a hill with a view."
PARTIAL = "Bring a blanket and "


def carry_on(partial):
    """A Continue request as the app sends it: the partial, then its carry-on user turn."""
    text = partial if isinstance(partial, str) else "".join(b["text"] for b in partial)
    return [
        {"role": "user", "content": "Plan a picnic"},
        {"role": "assistant", "content": partial},
        {"role": "user", "content": carry_on_request(text)},
    ]


def test_a_later_turn_after_the_whole_reply_is_no_carry_on(fake):
    """An earlier reply that was the whole reply, then a new question: the whole reply again,
    not an empty "rest" (a fake that read message order alone would answer nothing)."""
    fake.reply_text = carrying_on(WHOLE)
    messages = [
        {"role": "user", "content": "Plan a picnic"},
        {"role": "assistant", "content": WHOLE},
        {"role": "user", "content": "And a second one?"},
    ]
    assert text_of(connect(fake).messages.create(**{**REQUEST, "messages": messages})) == WHOLE


def test_carrying_on_answers_the_whole_reply_without_a_partial(fake):
    fake.reply_text = carrying_on(WHOLE)
    client = connect(fake)
    messages = [{"role": "user", "content": "Plan a picnic"}]
    assert text_of(client.messages.create(**{**REQUEST, "messages": messages})) == WHOLE


def test_carrying_on_sends_the_rest_after_the_partial(fake):
    fake.reply_text = carrying_on(WHOLE)
    received = []
    read_stream(connect(fake), received, messages=carry_on(PARTIAL))
    assert "".join(received) == WHOLE[len(PARTIAL) :]


def test_carrying_on_after_a_partial_stripped_of_its_trailing_space(fake):
    fake.reply_text = carrying_on(WHOLE)
    message = connect(fake).messages.create(**{**REQUEST, "messages": carry_on(PARTIAL.rstrip())})
    assert text_of(message) == " a flask of tea, then find a hill with a view."


def test_carrying_on_can_repeat_the_partials_tail(fake):
    fake.reply_text = carrying_on(WHOLE, repeat_tail=4)
    blocks = [{"type": "text", "text": PARTIAL.rstrip()}]
    message = connect(fake).messages.create(**{**REQUEST, "messages": carry_on(blocks)})
    # The partial's last four characters, " and", then what follows it.
    assert text_of(message) == " and a flask of tea, then find a hill with a view."


def test_carrying_on_from_something_else(fake):
    fake.reply_text = carrying_on(WHOLE)
    message = connect(fake).messages.create(**{**REQUEST, "messages": carry_on("Stay home ")})
    assert text_of(message) == NOT_THE_BEGINNING
