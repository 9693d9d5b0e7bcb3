"""A fake Anthropic Messages API on loopback, speaking the real wire format to the real SDK.

Point the SDK (or the app, through ANTHROPIC_BASE_URL) at `FakeAnthropic().url`. By default each
`POST /v1/messages` is answered with "Echo: <last user text>", streamed one word per delta when the
request asks for a stream. `fake.enqueue(...)` scripts the next requests, one behaviour each;
`fake.behaviour` is used once the queue is empty:

    Status(529)                   HTTP error before any stream (error body as the real API's)
    StreamError(after=3)          `event: error` (overloaded_error) after 3 deltas, then end
    Hang(after=None | n)          stop sending, before the status line or after n deltas, until
                                  `fake.release()` (then carry on), the client leaves or `stop()`
    Drop(after=None | n)          close the connection abruptly, with no error event

Mid-stream behaviours need a streaming request: on a non-streaming one, Hang and Drop act before
the response and StreamError answers with the HTTP status of its error type.

How the SDK (anthropic 2.11) retries, which decides how long a test waits:
- It retries 408, 409, 429 and every status >= 500 (so 529), and connection errors and timeouts
  before the response headers (so a `Hang()` or `Drop()` before the status line), twice by
  default (`max_retries`). `x-should-retry: true/false` overrides the status (`should_retry=`).
- The wait is `retry-after-ms` (milliseconds), else `retry-after` (seconds or an HTTP date),
  capped only at ~50 days, so a large `retry-after` makes a test sleep that long. A value <= 0
  is ignored: the SDK then backs off 0.5 s, 1 s, 2 s... (at most 8 s) less up to 25% jitter.
  So `Status(529, retry_after_ms=1)` makes each retry cost 1 ms; `retry_after_ms=0` does not.
- Errors after the headers are never retried: the SDK raises them while the stream is iterated.
  An `event: error` is a plain `anthropic.APIStatusError` with status_code 200; a drop is
  `httpx2.RemoteProtocolError` and a read timeout `httpx2.ReadTimeout`, which the SDK leaves
  unwrapped (so `anthropic.APIConnectionError` does not catch them).
"""

import contextlib
import json
import re
import select
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The error type the real API sends with each status, and the message the fake sends with it.
ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
STATUS_OF_ERROR = {error_type: status for status, (error_type, _) in ERRORS.items()}


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error status and the real API's error body, before any stream."""

    status: int = 529
    retry_after: str | None = None
    retry_after_ms: int | None = None
    should_retry: bool | None = None


@dataclass(frozen=True)
class StreamError:
    """Send `event: error` after `after` deltas, then end the response."""

    after: int = 0
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True)
class Hang:
    """Stop sending (None: before the status line) until released, left or stopped."""

    after: int | None = None


@dataclass(frozen=True)
class Drop:
    """Close the connection abruptly (None: before the status line) after `after` deltas."""

    after: int | None = None


Behaviour = Status | StreamError | Hang | Drop


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it; header names are lower case."""

    body: dict
    headers: dict[str, str]


def last_user_text(body: dict) -> str:
    """The text of the last user message, whether its content is a string or blocks."""
    content = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    if isinstance(content, str):
        return content
    return "".join(block["text"] for block in content if block["type"] == "text")


def echo(body: dict) -> str:
    """The default reply: deterministic, and shows which message the model was answering."""
    return f"Echo: {last_user_text(body)}"


def carrying_on(whole: str):
    """A reply_text that answers ``whole``, or, when the request ends with a prefilled
    beginning of it (an assistant turn), the rest of it: as Claude carries on."""

    def reply(body: dict) -> str:
        last = body["messages"][-1]
        if last["role"] != "assistant":
            return whole
        if not whole.startswith(last["content"]):
            return "The prefill was not the beginning of the reply."
        return whole[len(last["content"]) :]

    return reply


def tokens(text: str) -> list[str]:
    """A word per token, each keeping the whitespace after it, so that they join to the text."""
    return [token for token in re.split(r"(?<=\s)(?=\S)", text) if token]


class FakeAnthropic:
    """The fake server, run in a daemon thread; `with FakeAnthropic() as fake: ...`."""

    def __init__(self) -> None:
        self.reply_text: str | Callable[[dict], str] = echo
        self.token_delay = 0.0
        self.behaviour: Behaviour | None = None
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._queue: deque[Behaviour] = deque()
        self._count = 0
        self._release = threading.Event()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval, as stop() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def __enter__(self) -> "FakeAnthropic":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and cut every open connection, hanging ones included."""
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            # Keep-alive handlers block reading the next request; this wakes them.
            _shutdown(connection)
        self._server.server_close()
        self._thread.join()

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Script the next requests: each takes one behaviour, before `self.behaviour` applies."""
        with self._lock:
            self._queue.extend(behaviours)

    def release(self) -> None:
        """Let every request received so far carry on past its hang, now or when it gets there."""
        with self._lock:
            self._release.set()
            self._release = threading.Event()

    def _receive(self, body: dict, headers: dict[str, str]) -> "_Received":
        """Records a request and picks its behaviour."""
        with self._lock:
            self._requests.append(RecordedRequest(body, headers))
            self._count += 1
            behaviour = self._queue.popleft() if self._queue else self.behaviour
            # The release that lets it past a hang is the next one after it arrived, so a test
            # that releases once it has seen the request cannot release too early.
            return _Received(self._count, behaviour, self._release)

    def _reply(self, body: dict) -> str:
        return self.reply_text(body) if callable(self.reply_text) else self.reply_text


@dataclass(frozen=True)
class _Received:
    number: int
    behaviour: Behaviour | None
    release: threading.Event


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 for chunked streams: a connection closed mid-body is then an error to the client,
    # whereas HTTP/1.0 would let it pass for a normal end of the stream.
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Like the real API, send each event at once (no wait for a delayed acknowledgement).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.discard(self.connection)
        super().finish()

    @property
    def fake(self) -> FakeAnthropic:
        return self.server.fake

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read `fake.requests`, not a log."""

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except OSError:
            # The client left or stop() cut the connection: nothing to answer.
            self.close_connection = True

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.split("?")[0] != "/v1/messages":
            self._error("req_fake_unrouted", Status(404))
            return
        body = json.loads(data)
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.received = self.fake._receive(body, headers)
        behaviour = self.received.behaviour
        request_id = f"req_fake_{self.received.number}"
        streaming = body.get("stream") is True
        if isinstance(behaviour, Hang | Drop) and (behaviour.after is None or not streaming):
            if not self._act(behaviour):
                return
            behaviour = None
        if isinstance(behaviour, Status):
            self._error(request_id, behaviour)
        elif isinstance(behaviour, StreamError) and not streaming:
            self._error(request_id, Status(STATUS_OF_ERROR[behaviour.error_type]))
        elif streaming:
            self._stream(body, request_id, behaviour)
        else:
            text = self.fake._reply(body)
            content = [{"type": "text", "text": text}]
            self._json(200, request_id, self._message(body, content, len(tokens(text))), {})

    def _message(self, body: dict, content: list, output_tokens: int) -> dict:
        """A Message object as the API sends it: in full, or (streaming) as it starts."""
        return {
            "id": f"msg_fake_{self.received.number}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "end_turn" if content else None,
            "stop_sequence": None,
            # About four characters a token: a stand-in, deterministic for a given request.
            "usage": {
                "input_tokens": len(json.dumps(body["messages"])) // 4,
                "output_tokens": output_tokens,
            },
        }

    def _stream(self, body: dict, request_id: str, behaviour: Behaviour | None) -> None:
        words = tokens(self.fake._reply(body))
        sse = {"Content-Type": "text/event-stream; charset=utf-8", "Transfer-Encoding": "chunked"}
        self._begin(200, request_id, sse)
        self._event("message_start", {"message": self._message(body, [], 1)})
        block = {"type": "text", "text": ""}
        self._event("content_block_start", {"index": 0, "content_block": block})
        self._event("ping", {})
        interrupt_at = min(behaviour.after, len(words)) if behaviour else None
        for sent in range(len(words) + 1):
            if sent == interrupt_at and not self._act(behaviour):
                return
            if sent == len(words):
                break
            if sent and self.fake._stopping.wait(self.fake.token_delay):
                return
            delta = {"type": "text_delta", "text": words[sent]}
            self._event("content_block_delta", {"index": 0, "delta": delta})
        self._event("content_block_stop", {"index": 0})
        end = {"stop_reason": "end_turn", "stop_sequence": None}
        self._event("message_delta", {"delta": end, "usage": {"output_tokens": len(words)}})
        self._event("message_stop", {})
        self._end()

    def _act(self, behaviour: StreamError | Hang | Drop) -> bool:
        """Acts out a behaviour that interrupts the response; whether to carry on after it."""
        if isinstance(behaviour, StreamError):
            error = {"type": behaviour.error_type, "message": behaviour.message}
            self._event("error", {"error": error})
            self._end()
            return False
        if isinstance(behaviour, Hang) and self._hang():
            return True
        _shutdown(self.connection)
        self.close_connection = True
        return False

    def _hang(self) -> bool:
        """Waits for a release; False if the client left or the server is stopping first."""
        while not self.received.release.wait(0.02):
            if self.fake._stopping.is_set() or self._client_left():
                return False
        return True

    def _client_left(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        try:
            # Readable with nothing to read is the client's end of the connection.
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def _error(self, request_id: str, behaviour: Status) -> None:
        error_type, message = ERRORS[behaviour.status]
        headers = {}
        if behaviour.retry_after is not None:
            headers["retry-after"] = behaviour.retry_after
        if behaviour.retry_after_ms is not None:
            headers["retry-after-ms"] = str(behaviour.retry_after_ms)
        if behaviour.should_retry is not None:
            headers["x-should-retry"] = str(behaviour.should_retry).lower()
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }
        self._json(behaviour.status, request_id, body, headers)

    def _json(self, status: int, request_id: str, body: dict, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        sized = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        self._begin(status, request_id, {**sized, **headers})
        self.wfile.write(data)

    def _begin(self, status: int, request_id: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("request-id", request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _event(self, event_type: str, data: dict) -> None:
        """Sends one SSE frame as one chunk; wfile is unbuffered, so it leaves at once."""
        frame = f"event: {event_type}\ndata: {json.dumps({'type': event_type, **data})}\n\n"
        payload = frame.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def _shutdown(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the other side
        connection.shutdown(socket.SHUT_RDWR)
