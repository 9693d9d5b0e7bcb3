"""P10: what the 20th turn of a conversation costs in input tokens, prompt caching on ÷ off.

The app's Claude provider writes the same 20-turn conversation twice against the fake
Messages API (which reports cache writes and reads as the real API does, see
tests/fake_anthropic.py): once as configured (FLASK_PROMPT_CACHE_TTL=5m), once with caching
off. The 20th request's usage is priced as the API bills input: a cache write at 1.25 times
(5-minute cache), a cache read at a tenth, other input at one.
"""

from dataclasses import dataclass

from tests.fake_anthropic import FakeAnthropic
from webapp.conversations import Message
from webapp.llm import CACHE_OFF, Finished, Usage
from webapp.llm.claude import ClaudeProvider

TURNS = 20
CACHE_TTL = "5m"
WRITE_PRICE, READ_PRICE = 1.25, 0.1
"""Input prices of a 5-minute cache write and of a cache read, relative to plain input."""
QUESTION = (
    "Here is the next part of the chapter I am editing, paragraph {n}: the harbour at dawn, "
    "the boats coming in, the gulls, the smell of diesel and salt, the old man mending nets "
    "who has watched this for sixty years and still counts every boat. Tighten it, keep the "
    "rhythm, and tell me which sentence carries the most weight and why. "
)


def billed_input(usage: Usage) -> float:
    """The request's input tokens as billed: plain, cache writes and cache reads priced."""
    return (
        usage.input_tokens
        + WRITE_PRICE * usage.cache_write_tokens
        + READ_PRICE * usage.cache_read_tokens
    )


def _last_turn_usage(fake: FakeAnthropic, cache_ttl: str) -> Usage:
    provider = ClaudeProvider(
        api_key="bench-key",
        base_url=fake.url,
        model="claude-sonnet-5-5",
        summary_model="claude-haiku-5-5",
        system_prompt="You are a helpful assistant. Answer clearly and concisely.",
        max_tokens=16_000,
        thinking_effort="high",
        summary_max_tokens=4000,
        prompt_cache_ttl=cache_ttl,
        timeout=30,
        summary_timeout=30,
        max_retries=0,
    )
    turns: list[Message] = []
    finished = None
    for n in range(TURNS):
        turns.append(Message(f"u{n:08d}", "user", QUESTION.format(n=n) * 2, 0))
        events = list(provider.stream_reply(turns))
        finished = events[-1]
        assert isinstance(finished, Finished)
        text = "".join(event for event in events if isinstance(event, str))
        turns.append(Message(f"a{n:08d}", "assistant", text, 0))
    return finished.usage


@dataclass(frozen=True)
class Caching:
    cached: Usage
    uncached: Usage

    @property
    def ratio(self) -> float:
        return billed_input(self.cached) / billed_input(self.uncached)


def twentieth_turn() -> Caching:
    """The 20th turn's usage with caching as configured, and with it off, each against a
    fake whose cache starts empty."""
    with FakeAnthropic() as fake:
        cached = _last_turn_usage(fake, CACHE_TTL)
    with FakeAnthropic() as fake:
        uncached = _last_turn_usage(fake, CACHE_OFF)
    return Caching(cached, uncached)
