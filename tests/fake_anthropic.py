"""A fake Anthropic Messages API on loopback, speaking the real wire format to the real SDK.

Point the SDK (or the app, through ANTHROPIC_BASE_URL) at `FakeAnthropic().url`. It answers

    POST /v1/messages               a reply: "Echo: <last user text>" unless `fake.reply_text`
                                    says otherwise, streamed a word per delta when asked to
    POST /v1/messages/count_tokens  {"input_tokens": n} for the same request shape
    GET  /v1/models/{model_id}      the model's ModelInfo

and anything else with 404 not_found_error. Every request is recorded (`fake.requests`, with its
path) and every response, errors included, has a `request-id` header (req_fake_<n>, n counting
every request); error bodies are {"type": "error", "error": {"type", "message"}, "request_id"}.

What it refuses, as today's API does (before any behaviour below is taken; the queue is left
alone), for messages and count_tokens alike unless noted:
- 400 invalid_request_error when the conversation ends with an assistant turn (current models
  support no prefill): "This model does not support assistant message prefill. The conversation
  must end with a user message."
- 400 for a missing or malformed model, messages (a non-empty list of user/assistant turns) or
  system; for max_tokens missing, not an integer or < 1 (messages only: count_tokens takes none);
  for `thinking` other than {"type": "adaptive"[, "display"]}, {"type": "enabled",
  "budget_tokens": >= 1024 and < max_tokens[, "display"]}, {"type": "disabled"} or
  {"type": "between_tools"} (display: "summarized" | "omitted"); for output_config.effort not in
  low/medium/high/xhigh/max; for a cache_control other than {"type": "ephemeral"[, "ttl": "5m" |
  "1h"]}, or more than 4 of them (the top-level one counts). The allowed values are read from the
  SDK's types, so they follow it. ("between_tools" is in the SDK: thinking off, with progress
  notes between tool calls; the fake has no tools, so it means no thinking.)
- 404 not_found_error "model: <id>" for a model that is not a literal of the SDK's
  `anthropic.types.model.Model` (`KNOWN_MODELS`), or that is in `fake.retired`.

What it sends with a reply:
- Thinking first, unless `fake.thinking` is None or the request has thinking
  {"type": "disabled"} (or "between_tools"): a thinking block at index 0 (content_block_start
  {type: thinking, thinking: "", signature: ""}, a thinking_delta per word of `fake.thinking`, one
  signature_delta with an opaque signature, content_block_stop), then the text block at index 1.
  With display "omitted" the block has no thinking_delta, only the signature, sent as late as
  the deltas would have ended (`token_delay` for each thinking word). A request that
  names no display gets `fake.thinking_display` ("summarized"; on the real API the default depends
  on the model, and newer ones omit). Non-streamed, `content` holds the same blocks, complete.
- Tokens are words (`tokens()`); thinking tokens count toward max_tokens, thinking first: past
  max_tokens the reply stops there, stop_reason "max_tokens", the text cut (no text block at all
  when thinking used the whole budget). output_tokens counts thinking and text
  (usage.output_tokens_details.thinking_tokens the thinking).
- Usage: message_start carries input_tokens, the cache fields and output_tokens 1; the final
  message_delta carries the stop_reason (and stop_details) with the cumulative usage
  (output_tokens and the input and cache counts again): the SDK merges them.
- Input tokens: a part of the prompt is the system prompt or one message (a string content counts
  as its text block, cache_control markers don't count), len(json.dumps(part)) // 4 tokens each.
- Prompt caching: with a top-level cache_control (breakpoint: the last message) or one on any
  system or content block (breakpoint: the part holding it), the prompt up to the last breakpoint
  is cached, per model, once it reaches `fake.min_cacheable_tokens` (below, nothing is cached and
  both cache fields are 0, silently, as the API does). usage.cache_read_input_tokens is the longest
  prefix the fake has cached before that this prompt starts with (up to the breakpoint),
  cache_creation_input_tokens the rest up to the breakpoint (split by TTL in `cache_creation`:
  ephemeral_5m_input_tokens / ephemeral_1h_input_tokens, each part taking the TTL of the first
  breakpoint at or after it), input_tokens what follows the breakpoint. Without cache_control
  both cache fields are 0 and input_tokens is everything. `fake.clear_cache()` forgets it all
  (as if the TTL had passed).
- Models: GET /v1/models/{id} answers a known id with a ModelInfo (id, type "model",
  display_name, created_at, line, lifecycle "active"); an alias with one dated version
  ("claude-haiku-4-5") resolves to it, as the API does; a retired id (in `fake.retired`) has
  lifecycle "retired" and deprecated_at/retires_at set, with 200: it stays in the catalogue while
  inference naming it gets 404. An unknown id: 404 not_found_error.

`fake.enqueue(...)` scripts the next POST /v1/messages requests (count_tokens and GET take none),
one behaviour each; `fake.behaviour` is used once the queue is empty:

    Status(529)                   HTTP error before any stream (error body as the real API's)
    SpendLimit()                  429 rate_limit_error, error.details.error_code
                                  "enforced_spend_limit_reached", no retry-after header
    StreamError(after=3)          `event: error` (overloaded_error) after 3 text deltas, then end
    Hang(after=None | n)          stop sending, before the status line or after n text deltas,
                                  until `fake.release()` (then carry on), the client leaves or
                                  `stop()`
    Drop(after=None | n)          close the connection abruptly, with no error event
    MaxTokens(after=n)            n text tokens, then stop_reason "max_tokens"
    Refusal(after=0)              n text tokens, then stop_reason "refusal" and stop_details
                                  {type: refusal, category, explanation}; with none, no text block

Mid-stream behaviours count text deltas (any thinking block is sent whole before; with no text
block they act where it would start) and need a streaming request: on a non-streaming one, Hang
and Drop act before the response and StreamError answers with the HTTP status of its error type.
MaxTokens and Refusal work on both. `fake.token_delay` spaces every delta, thinking included.

`carrying_on(whole, repeat_tail=0)` is a reply_text for Continue: when the request ends with a
user turn (asking to carry on) right after an assistant turn holding the partial reply, it gets
the rest of `whole` after the partial (which may have lost its trailing white space), first
repeating the partial's last `repeat_tail` characters if asked; a partial that is not the
beginning of `whole` gets NOT_THE_BEGINNING, a request without one `whole`.

How the SDK (anthropic 2.11) retries, which decides how long a test waits:
- It retries 408, 409, 429 and every status >= 500 (so 529), and connection errors and timeouts
  before the response headers (so a `Hang()` or `Drop()` before the status line), twice by
  default (`max_retries`). `x-should-retry: true/false` overrides the status (`should_retry=`).
  A spend limit is a 429 too, so it is retried (after the backoff below) though it cannot pass:
  the SDK raises `anthropic.EnforcedSpendLimitReachedError` (a RateLimitError) in the end.
- The wait is `retry-after-ms` (milliseconds), else `retry-after` (seconds or an HTTP date),
  capped only at ~50 days, so a large `retry-after` makes a test sleep that long. A value <= 0
  is ignored: the SDK then backs off 0.5 s, 1 s, 2 s... (at most 8 s) less up to 25% jitter.
  So `Status(529, retry_after_ms=1)` makes each retry cost 1 ms; `retry_after_ms=0` does not.
- Errors after the headers are never retried: the SDK raises them while the stream is iterated.
  An `event: error` is a plain `anthropic.APIStatusError` with status_code 200; a drop is
  `httpx2.RemoteProtocolError` and a read timeout `httpx2.ReadTimeout`, which the SDK leaves
  unwrapped (so `anthropic.APIConnectionError` does not catch them).
"""

import base64
import contextlib
import json
import re
import select
import socket
import threading
import typing
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from anthropic.types.cache_control_ephemeral_param import CacheControlEphemeralParam
from anthropic.types.model import Model
from anthropic.types.model_line import ModelLine
from anthropic.types.output_config_param import OutputConfigParam
from anthropic.types.thinking_config_adaptive_param import ThinkingConfigAdaptiveParam

from webapp.llm import carry_on_request


def _literals(annotation: object) -> tuple[str, ...]:
    """The string literals in a type, through Union and Optional, in order."""
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(typing.get_args(annotation))
    return tuple(value for arg in typing.get_args(annotation) for value in _literals(arg))


KNOWN_MODELS: tuple[str, ...] = _literals(Model)
"""The model ids the fake serves: the literals of the SDK's Model type."""
EFFORTS = _literals(typing.get_type_hints(OutputConfigParam)["effort"])
THINKING_DISPLAYS = _literals(typing.get_type_hints(ThinkingConfigAdaptiveParam)["display"])
CACHE_TTLS = _literals(typing.get_type_hints(CacheControlEphemeralParam)["ttl"])
MODEL_LINES = _literals(ModelLine)
# The keys each thinking type takes (ThinkingConfigParam's members).
THINKING_KEYS = {
    "adaptive": {"type", "display"},
    "enabled": {"type", "budget_tokens", "display"},
    "disabled": {"type"},
    "between_tools": {"type"},
}
MIN_THINKING_BUDGET = 1024  # ThinkingConfigEnabledParam: "Must be ≥1024 and less than max_tokens"
MAX_CACHE_BREAKPOINTS = 4
RETIRED_DEPRECATED_AT = "2026-01-05T00:00:00Z"
RETIRED_RETIRES_AT = "2026-04-05T00:00:00Z"
EPOCH = "1970-01-01T00:00:00Z"  # ModelInfo.created_at "may be set to an epoch value if ... unknown"

PREFILL_MESSAGE = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)
SPEND_LIMIT_MESSAGE = (
    "Your organization has reached its monthly spend limit for its API usage tier. "
    "API access will resume on the first day of next month at 00:00 UTC; "
    "move to a higher usage tier to restore access sooner."
)

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
class SpendLimit:
    """Answer 429 rate_limit_error with details.error_code "enforced_spend_limit_reached" (the
    organization crossed its tier's monthly spend limit), with no retry-after header."""


@dataclass(frozen=True)
class StreamError:
    """Send `event: error` after `after` text deltas, then end the response."""

    after: int = 0
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True)
class Hang:
    """Stop sending (None: before the status line) until released, left or stopped."""

    after: int | None = None


@dataclass(frozen=True)
class Drop:
    """Close the connection abruptly (None: before the status line) after `after` text deltas."""

    after: int | None = None


@dataclass(frozen=True)
class MaxTokens:
    """Stop after `after` text tokens (all of the reply if shorter), stop_reason "max_tokens"."""

    after: int


@dataclass(frozen=True)
class Refusal:
    """Stop after `after` text tokens, stop_reason "refusal" (no text block when 0), with
    stop_details {"type": "refusal", "category": ..., "explanation": ...}."""

    after: int = 0
    category: str | None = None
    explanation: str | None = None


Behaviour = Status | SpendLimit | StreamError | Hang | Drop | MaxTokens | Refusal


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it; header names are lower case. `body` is {} for a
    GET or a body that is not JSON."""

    body: dict
    headers: dict[str, str]
    path: str = "/v1/messages"


def message_text(message: dict) -> str:
    """The text of a message, whether its content is a string or blocks (text blocks only)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(block["text"] for block in content if block["type"] == "text")


def last_user_text(body: dict) -> str:
    """The text of the last user message, whether its content is a string or blocks."""
    return message_text(next(m for m in reversed(body["messages"]) if m["role"] == "user"))


def echo(body: dict) -> str:
    """The default reply: deterministic, and shows which message the model was answering."""
    return f"Echo: {last_user_text(body)}"


NOT_THE_BEGINNING = "The partial reply was not the beginning of the reply."


def carrying_on(whole: str, *, repeat_tail: int = 0) -> Callable[[dict], str]:
    """A reply_text that answers ``whole``, or, when the last user turn (asking to carry on)
    follows an assistant turn holding the beginning of it, the rest: as Claude carries on.

    The partial may have lost its trailing white space (what follows it in ``whole`` is sent).
    With ``repeat_tail``, the reply first repeats the partial's last ``repeat_tail`` characters,
    as models sometimes do, for tests of overlap removal. A carry-on request is known by its
    last user turn, the app's own (webapp.llm.carry_on_request), as a model knows it by reading
    it: any other request gets ``whole``, even one whose earlier reply was ``whole`` itself.
    A carry-on after an assistant turn that is not the beginning of ``whole`` gets
    NOT_THE_BEGINNING."""

    def reply(body: dict) -> str:
        messages = body["messages"]
        if len(messages) < 2 or messages[-2]["role"] != "assistant":
            return whole
        partial = message_text(messages[-2])
        if message_text(messages[-1]) != carry_on_request(partial):
            return whole
        if not whole.startswith(partial):
            return NOT_THE_BEGINNING
        repeated = partial[len(partial) - repeat_tail :] if repeat_tail > 0 else ""
        return repeated + whole[len(partial) :]

    return reply


def tokens(text: str) -> list[str]:
    """A word per token, each keeping the whitespace after it, so that they join to the text."""
    return [token for token in re.split(r"(?<=\s)(?=\S)", text) if token]


def display_name(model_id: str) -> str:
    """The name of a model id: "claude-haiku-4-5-20251001" is "Claude Haiku 4.5"."""
    words = [word for word in model_id.split("-") if not re.fullmatch(r"\d{8}", word)]
    names = [word.capitalize() for word in words if not word.isdigit()]
    version = ".".join(word for word in words if word.isdigit())
    return " ".join([*names, version] if version else names)


def resolve_model(model_id: str) -> str:
    """The dated id an alias stands for, when the SDK knows exactly one; else the id itself."""
    dated = [m for m in KNOWN_MODELS if re.fullmatch(re.escape(model_id) + r"-\d{8}", m)]
    return dated[0] if len(dated) == 1 else model_id


class FakeAnthropic:
    """The fake server, run in a daemon thread; `with FakeAnthropic() as fake: ...`."""

    def __init__(self) -> None:
        self.reply_text: str | Callable[[dict], str] = echo
        self.token_delay = 0.0
        self.behaviour: Behaviour | None = None
        self.thinking: str | None = "Let me think this through."
        """What the model thinks before each reply (None: it never thinks)."""
        self.thinking_display = "summarized"
        """The display of a request that names none."""
        self.retired: set[str] = set()
        """Model ids that are retired: in the catalogue, but inference naming them is a 404."""
        # The documented minimum cacheable prompt for Sonnet-class models (others differ, e.g.
        # 2048 or 4096 tokens for some Haiku and Opus models); shorter prompts are not cached.
        self.min_cacheable_tokens = 1024
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._queue: deque[Behaviour] = deque()
        self._cache: dict[str, set[tuple[str, ...]]] = {}
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

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """The POST /v1/messages requests received so far (replies and summaries), oldest
        first: what a test counts, without the app's start-up look-up of its models."""
        return [request for request in self.requests if request.path == "/v1/messages"]

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Script the next message requests: each takes one behaviour, before `self.behaviour`."""
        with self._lock:
            self._queue.extend(behaviours)

    def release(self) -> None:
        """Let every request received so far carry on past its hang, now or when it gets there."""
        with self._lock:
            self._release.set()
            self._release = threading.Event()

    def clear_cache(self) -> None:
        """Forget every cached prompt prefix, as when their TTL has passed."""
        with self._lock:
            self._cache.clear()

    def _receive(self, request: RecordedRequest) -> "_Received":
        """Records a request."""
        with self._lock:
            self._requests.append(request)
            self._count += 1
            # The release that lets it past a hang is the next one after it arrived, so a test
            # that releases once it has seen the request cannot release too early.
            return _Received(self._count, self._release)

    def _take_behaviour(self) -> Behaviour | None:
        with self._lock:
            return self._queue.popleft() if self._queue else self.behaviour

    def _reply(self, body: dict) -> str:
        return self.reply_text(body) if callable(self.reply_text) else self.reply_text

    def _is_retired(self, model_id: str) -> bool:
        """Whether the model is retired, under this name or its alias or dated id."""
        return resolve_model(model_id) in {resolve_model(retired) for retired in self.retired}

    def _model_info(self, model_id: str) -> dict | None:
        """The ModelInfo of a known id (or alias), or None."""
        if model_id not in KNOWN_MODELS:
            return None
        resolved = resolve_model(model_id)
        date = re.search(r"-(\d{4})(\d{2})(\d{2})$", resolved)
        line = resolved.split("-")[1] if resolved.count("-") else None
        retired = self._is_retired(model_id)
        return {
            "type": "model",
            "id": resolved,
            "display_name": display_name(resolved),
            "created_at": f"{date[1]}-{date[2]}-{date[3]}T00:00:00Z" if date else EPOCH,
            "line": line if line in MODEL_LINES else None,
            "lifecycle": "retired" if retired else "active",
            "deprecated_at": RETIRED_DEPRECATED_AT if retired else None,
            "retires_at": RETIRED_RETIRES_AT if retired else None,
        }

    def _usage(self, body: dict) -> dict:
        """The input side of a reply's usage; writes the prompt's breakpoints to the cache."""
        keys = [json.dumps(part, sort_keys=True) for part in _parts(body)]
        sizes = [len(key) // 4 for key in keys]
        total = sum(sizes)
        creation = dict.fromkeys(CACHE_TTLS, 0)
        usage = {"input_tokens": total, "cache_creation_input_tokens": 0}
        usage["cache_read_input_tokens"] = 0
        points = _breakpoints(body)
        cached = sum(sizes[: points[-1][0]]) if points else 0
        if points and cached >= self.min_cacheable_tokens:
            end = points[-1][0]
            with self._lock:
                store = self._cache.setdefault(body["model"], set())
                hit = next((n for n in range(end, 0, -1) if tuple(keys[:n]) in store), 0)
                for point, _ in points:
                    if sum(sizes[:point]) >= self.min_cacheable_tokens:
                        store.add(tuple(keys[:point]))
            for part in range(hit, end):
                ttl = next(ttl for point, ttl in points if point > part)
                creation[ttl] += sizes[part]
            read = sum(sizes[:hit])
            usage = {
                "input_tokens": total - cached,
                "cache_creation_input_tokens": cached - read,
                "cache_read_input_tokens": read,
            }
        usage["cache_creation"] = {
            f"ephemeral_{ttl}_input_tokens": n for ttl, n in creation.items()
        }
        return usage


@dataclass(frozen=True)
class _Received:
    number: int
    release: threading.Event


@dataclass
class _Plan:
    """What a reply holds: thinking (None: none), text and why it stops."""

    thinking: list[str] | None
    show_thinking: bool
    text: list[str]
    text_block: bool
    stop_reason: str
    stop_details: dict | None = None
    signature: str = ""
    usage: dict = field(default_factory=dict)

    @property
    def output_tokens(self) -> int:
        return len(self.thinking or []) + len(self.text)


def _blocks(content: str | list) -> list:
    """Content as blocks, without cache_control: what a prompt's tokens and cache key are of."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [{k: v for k, v in block.items() if k != "cache_control"} for block in content]


def _parts(body: dict) -> list[dict]:
    """The prompt's parts: the system prompt, if any, then each message."""
    system = _blocks(body.get("system") or [])
    parts = [{"system": system}] if system else []
    return parts + [{"role": m["role"], "content": _blocks(m["content"])} for m in body["messages"]]


def _breakpoints(body: dict) -> list[tuple[int, str]]:
    """The prompt's cache breakpoints, in order: how many parts each ends after, and its TTL."""
    has_system = bool(_blocks(body.get("system") or []))
    points = []
    system = body.get("system")
    if isinstance(system, list):
        points += [
            (1, b["cache_control"].get("ttl", "5m")) for b in system if b.get("cache_control")
        ]
    for index, message in enumerate(body["messages"], start=1 + has_system):
        if isinstance(message["content"], list):
            for block in message["content"]:
                if block.get("cache_control"):
                    points.append((index, block["cache_control"].get("ttl", "5m")))
    if body.get("cache_control"):
        points.append((len(body["messages"]) + has_system, body["cache_control"].get("ttl", "5m")))
    return sorted(points, key=lambda point: point[0])


def _quoted(values: tuple[str, ...]) -> str:
    quoted = [f"'{value}'" for value in values]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cache_control_problem(cache_control: object, where: str) -> str | None:
    if not isinstance(cache_control, dict) or cache_control.get("type") != "ephemeral":
        return f"{where}.type: Input should be 'ephemeral'"
    if extra := sorted(set(cache_control) - {"type", "ttl"}):
        return f"{where}.{extra[0]}: Extra inputs are not permitted"
    if "ttl" in cache_control and cache_control["ttl"] not in CACHE_TTLS:
        return f"{where}.ttl: Input should be {_quoted(CACHE_TTLS)}"
    return None


def _blocks_problem(blocks: object, where: str) -> str | None:
    if isinstance(blocks, str):
        return None
    if not isinstance(blocks, list):
        return f"{where}: Input should be a valid string or list"
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"{where}.{index}: Input should be a content block with a type"
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            return f"{where}.{index}.text: Field required"
        if block.get("cache_control") is not None and (
            problem := _cache_control_problem(block["cache_control"], f"{where}.{index}")
        ):
            return problem
    return None


def _thinking_problem(thinking: object, max_tokens: int | None) -> str | None:
    if not isinstance(thinking, dict) or thinking.get("type") not in THINKING_KEYS:
        return f"thinking.type: Input should be {_quoted(tuple(THINKING_KEYS))}"
    kind = thinking["type"]
    if extra := sorted(set(thinking) - THINKING_KEYS[kind]):
        return f"thinking.{kind}.{extra[0]}: Extra inputs are not permitted"
    if thinking.get("display") is not None and thinking["display"] not in THINKING_DISPLAYS:
        return f"thinking.{kind}.display: Input should be {_quoted(THINKING_DISPLAYS)}"
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not _is_int(budget):
            return "thinking.enabled.budget_tokens: Input should be a valid integer"
        if budget < MIN_THINKING_BUDGET:
            return (
                "thinking.enabled.budget_tokens: Input should be greater than or equal to "
                f"{MIN_THINKING_BUDGET}"
            )
        if max_tokens is not None and budget >= max_tokens:
            return "`max_tokens` must be greater than `thinking.budget_tokens`."
    return None


def _problem(body: object, counting: bool, fake: FakeAnthropic) -> tuple[int, str] | None:
    """Why the API would refuse this request (status, message), or None."""
    if not isinstance(body, dict):
        return 400, "The request body is not valid JSON."
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return 400, "model: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, "messages: at least one message is required"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return 400, f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if "content" not in message:
            return 400, f"messages.{index}.content: Field required"
        if problem := _blocks_problem(message["content"], f"messages.{index}.content"):
            return 400, problem
    if body.get("system") is not None and (problem := _blocks_problem(body["system"], "system")):
        return 400, problem
    max_tokens = None
    if not counting:
        if "max_tokens" not in body:
            return 400, "max_tokens: Field required"
        max_tokens = body["max_tokens"]
        if not _is_int(max_tokens):
            return 400, "max_tokens: Input should be a valid integer"
        if max_tokens < 1:
            return 400, "max_tokens: Input should be greater than or equal to 1"
    if body.get("thinking") is not None and (
        problem := _thinking_problem(body["thinking"], max_tokens)
    ):
        return 400, problem
    output_config = body.get("output_config")
    if output_config is not None:
        if not isinstance(output_config, dict):
            return 400, "output_config: Input should be a valid dictionary"
        if output_config.get("effort") is not None and output_config["effort"] not in EFFORTS:
            return 400, f"output_config.effort: Input should be {_quoted(EFFORTS)}"
    if body.get("cache_control") is not None and (
        problem := _cache_control_problem(body["cache_control"], "cache_control")
    ):
        return 400, problem
    if len(_breakpoints(body)) > MAX_CACHE_BREAKPOINTS:
        found = len(_breakpoints(body))
        return 400, (
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {found}."
        )
    if model not in KNOWN_MODELS or fake._is_retired(model):
        return 404, f"model: {model}"
    if messages[-1]["role"] == "assistant":
        return 400, PREFILL_MESSAGE
    return None


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

    def _record(self, body: dict) -> tuple[str, str]:
        """Records the request; its path and request id."""
        path = self.path.split("?")[0]
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.received = self.fake._receive(RecordedRequest(body, headers, path))
        return path, f"req_fake_{self.received.number}"

    def do_GET(self) -> None:
        path, request_id = self._record({})
        route = re.fullmatch(r"/v1/models/([^/]+)", path)
        if not route:
            self._error(request_id, 404)
            return
        model_id = unquote(route[1])
        info = self.fake._model_info(model_id)
        if info is None:
            self._error(request_id, 404, f"model: {model_id}")
            return
        self._json(200, request_id, info, {})

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        path, request_id = self._record(body if isinstance(body, dict) else {})
        if path not in ("/v1/messages", "/v1/messages/count_tokens"):
            self._error(request_id, 404)
            return
        counting = path == "/v1/messages/count_tokens"
        problem = _problem(body, counting, self.fake)
        if problem:
            self._error(request_id, *problem)
        elif counting:
            input_tokens = sum(len(json.dumps(p, sort_keys=True)) // 4 for p in _parts(body))
            self._json(200, request_id, {"input_tokens": input_tokens}, {})
        else:
            self._answer(body, request_id, self.fake._take_behaviour())

    def _answer(self, body: dict, request_id: str, behaviour: Behaviour | None) -> None:
        streaming = body.get("stream") is True
        if isinstance(behaviour, Hang | Drop) and (behaviour.after is None or not streaming):
            if not self._act(behaviour):
                return
            behaviour = None
        if isinstance(behaviour, Status):
            self._status(request_id, behaviour)
        elif isinstance(behaviour, SpendLimit):
            details = {"error_code": "enforced_spend_limit_reached"}
            self._error(request_id, 429, SPEND_LIMIT_MESSAGE, details=details)
        elif isinstance(behaviour, StreamError) and not streaming:
            self._status(request_id, Status(STATUS_OF_ERROR[behaviour.error_type]))
        else:
            plan = self._plan(body, behaviour)
            if streaming:
                self._stream(body, request_id, behaviour, plan)
            else:
                message = self._message(body, self._content(plan), plan.stop_reason, plan)
                message["usage"] = {**plan.usage, **self._output_usage(plan)}
                self._json(200, request_id, message, {})

    def _plan(self, body: dict, behaviour: Behaviour | None) -> _Plan:
        """Decides the reply: its thinking and text tokens, within max_tokens, and its end."""
        fake = self.fake
        text = tokens(fake._reply(body))
        config = body.get("thinking") or {}
        thinks = fake.thinking is not None and config.get("type") not in (
            "disabled",
            "between_tools",
        )
        thinking = tokens(fake.thinking) if thinks else None
        display = config.get("display") or fake.thinking_display
        stop_reason, stop_details = "end_turn", None
        if isinstance(behaviour, MaxTokens):
            text, stop_reason = text[: behaviour.after], "max_tokens"
        elif isinstance(behaviour, Refusal):
            text, stop_reason = text[: behaviour.after], "refusal"
            stop_details = {
                "type": "refusal",
                "category": behaviour.category,
                "explanation": behaviour.explanation,
            }
        budget = body["max_tokens"]
        if len(thinking or []) + len(text) > budget:
            thinking = None if thinking is None else thinking[:budget]
            text = text[: budget - len(thinking or [])]
            stop_reason, stop_details = "max_tokens", None
        signature = base64.b64encode(f"fake-signature/{self.received.number}".encode()).decode()
        return _Plan(
            thinking=thinking,
            show_thinking=display != "omitted",
            text=text,
            text_block=bool(text) or stop_reason == "end_turn",
            stop_reason=stop_reason,
            stop_details=stop_details,
            signature=signature,
            usage=fake._usage(body),
        )

    def _content(self, plan: _Plan) -> list[dict]:
        content = []
        if plan.thinking is not None:
            thought = "".join(plan.thinking) if plan.show_thinking else ""
            content.append({"type": "thinking", "thinking": thought, "signature": plan.signature})
        if plan.text_block:
            content.append({"type": "text", "text": "".join(plan.text)})
        return content

    def _message(self, body: dict, content: list, stop_reason: str | None, plan: _Plan) -> dict:
        """A Message object as the API sends it: in full, or (streaming) as it starts."""
        return {
            "id": f"msg_fake_{self.received.number}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "stop_details": plan.stop_details if stop_reason else None,
            "usage": {**plan.usage, "output_tokens": 1},
        }

    @staticmethod
    def _output_usage(plan: _Plan) -> dict:
        thinking_tokens = len(plan.thinking or [])
        return {
            "output_tokens": plan.output_tokens,
            "output_tokens_details": {"thinking_tokens": thinking_tokens},
        }

    def _stream(
        self, body: dict, request_id: str, behaviour: Behaviour | None, plan: _Plan
    ) -> None:
        sse = {"Content-Type": "text/event-stream; charset=utf-8", "Transfer-Encoding": "chunked"}
        self._begin(200, request_id, sse)
        self._event("message_start", {"message": self._message(body, [], None, plan)})
        self._deltas = 0
        index = 0
        if plan.thinking is not None:
            block = {"type": "thinking", "thinking": "", "signature": ""}
            self._event("content_block_start", {"index": 0, "content_block": block})
            self._event("ping", {})
            for word in plan.thinking if plan.show_thinking else []:
                if not self._delta(0, {"type": "thinking_delta", "thinking": word}):
                    return
            # Omitted thinking takes its time all the same: the model thinks, and only the
            # signature comes, once it has.
            hidden = 0 if plan.show_thinking else len(plan.thinking)
            if hidden and self.fake._stopping.wait(self.fake.token_delay * hidden):
                return
            self._event("content_block_delta", {"index": 0, "delta": self._signature(plan)})
            self._event("content_block_stop", {"index": 0})
            index = 1
        interrupts = isinstance(behaviour, StreamError | Hang | Drop)
        if interrupts and not plan.text_block and not self._act(behaviour):
            return  # no text to count deltas of (thinking used max_tokens): act at its end
        if plan.text_block:
            block = {"type": "text", "text": ""}
            self._event("content_block_start", {"index": index, "content_block": block})
            if index == 0:
                self._event("ping", {})
            words = plan.text
            interrupt_at = min(behaviour.after, len(words)) if interrupts else None
            for sent in range(len(words) + 1):
                if sent == interrupt_at and not self._act(behaviour):
                    return
                if sent == len(words):
                    break
                if not self._delta(index, {"type": "text_delta", "text": words[sent]}):
                    return
            self._event("content_block_stop", {"index": index})
        end = {
            "stop_reason": plan.stop_reason,
            "stop_sequence": None,
            "stop_details": plan.stop_details,
        }
        usage = {**plan.usage, **self._output_usage(plan)}
        del usage["cache_creation"]  # not in MessageDeltaUsage
        self._event("message_delta", {"delta": end, "usage": usage})
        self._event("message_stop", {})
        self._end()

    @staticmethod
    def _signature(plan: _Plan) -> dict:
        return {"type": "signature_delta", "signature": plan.signature}

    def _delta(self, index: int, delta: dict) -> bool:
        """Sends a delta, `token_delay` after the one before; False if the server is stopping."""
        if self._deltas and self.fake._stopping.wait(self.fake.token_delay):
            return False
        self._deltas += 1
        self._event("content_block_delta", {"index": index, "delta": delta})
        return True

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

    def _status(self, request_id: str, behaviour: Status) -> None:
        headers = {}
        if behaviour.retry_after is not None:
            headers["retry-after"] = behaviour.retry_after
        if behaviour.retry_after_ms is not None:
            headers["retry-after-ms"] = str(behaviour.retry_after_ms)
        if behaviour.should_retry is not None:
            headers["x-should-retry"] = str(behaviour.should_retry).lower()
        self._error(request_id, behaviour.status, headers=headers)

    def _error(
        self,
        request_id: str,
        status: int,
        message: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        details: dict | None = None,
    ) -> None:
        error_type, default_message = ERRORS[status]
        error = {"type": error_type, "message": message or default_message}
        if details is not None:
            error["details"] = details
        body = {"type": "error", "error": error, "request_id": request_id}
        self._json(status, request_id, body, headers or {})

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
