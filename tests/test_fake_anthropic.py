"""The fake Anthropic API, driven by the real SDK: proof that it speaks the wire format."""

import threading
import time

import anthropic
import httpx2
import pytest

from tests.fake_anthropic import Drop, FakeAnthropic, Hang, Status, StreamError, tokens

MESSAGES = [
    {"role": "user", "content": "first"},
    {"role": "assistant", "content": "ok"},
    {"role": "user", "content": "Hello there, Claude"},
]
REQUEST = {"model": "claude-test", "system": "Be terse.", "max_tokens": 64, "messages": MESSAGES}
REPLY = ["Echo: ", "Hello ", "there, ", "Claude"]


@pytest.fixture
def fake():
    with FakeAnthropic() as server:
        yield server


def connect(fake, max_retries=0, timeout=5.0):
    return anthropic.Anthropic(
        api_key="test-key", base_url=fake.url, max_retries=max_retries, timeout=timeout
    )


def read_stream(client, received):
    """Streams a reply into `received`, so that a test sees the text that came before an error."""
    with client.messages.stream(**REQUEST) as stream:
        for text in stream.text_stream:
            received.append(text)
        return stream, stream.get_final_message()


def test_a_stream_yields_the_reply_word_by_word(fake):
    received = []
    stream, message = read_stream(connect(fake), received)
    assert received == REPLY
    assert message.content[0].text == "Echo: Hello there, Claude"
    assert (message.stop_reason, message.model, message.usage.output_tokens) == (
        "end_turn",
        "claude-test",
        4,
    )
    assert stream.request_id == "req_fake_1"


def test_the_request_is_recorded_with_its_headers(fake):
    read_stream(connect(fake), [])
    [request] = fake.requests
    assert {key: request.body[key] for key in REQUEST} == REQUEST
    assert request.body["stream"] is True
    # anthropic 2.11 sends the API key as a bearer token, not as x-api-key.
    assert request.headers["authorization"] == "Bearer test-key"
    assert "x-api-key" not in request.headers
    assert request.headers["anthropic-version"]


def test_a_non_streaming_request_gets_a_complete_message(fake):
    message = connect(fake).messages.create(**REQUEST)
    assert message.content[0].text == "Echo: Hello there, Claude"
    assert (message.stop_reason, message.model) == ("end_turn", "claude-test")
    assert message._request_id == "req_fake_1"
    assert "stream" not in fake.requests[0].body


def test_the_reply_can_be_a_text_or_a_function_of_the_request(fake):
    client = connect(fake)
    fake.reply_text = "Fixed  reply\n"
    assert client.messages.create(**REQUEST).content[0].text == "Fixed  reply\n"
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
    assert time.monotonic() - started >= 0.15  # three gaps between four tokens


def test_other_paths_are_not_found(fake):
    with pytest.raises(anthropic.NotFoundError):
        connect(fake).messages.count_tokens(model="claude-test", messages=MESSAGES)
    assert fake.requests == []
