"""Claude, through the official anthropic SDK, streaming.

The SDK retries connection errors and 408/409/429/5xx/529 answers itself (with backoff,
honouring retry-after); this module adds no retry loop of its own. What the SDK does not
retry is an error that arrives in the middle of a stream (HTTP 200, then an ``error``
event, raised as APIStatusError with status 200) or a connection that breaks after the
headers (raised as the transport's own error): those end the reply with its partial text
kept, for the user to Continue or Retry.
"""

import logging
from collections.abc import Iterator, Sequence

import anthropic
import httpx2

from webapp.llm import (
    NOTE_INTRODUCTION,
    ModelBusy,
    ModelError,
    ModelMisconfigured,
    ModelStreamBroken,
    Turn,
)

log = logging.getLogger(__name__)

SUMMARY_PROMPT = """You write the notes that let a new session carry on a conversation that \
was interrupted. From the transcript, write, under these headings:
Goal: what the user is trying to achieve.
Done so far: what was worked out or produced, with the specific facts, names and numbers.
Decisions: what was decided, and why.
Open questions: what is still unresolved.
Next: what was about to happen next.
Be specific and brief. Write nothing else."""

BUSY_STATUSES = {408, 409, 429}
"""Besides every 5xx: answers that mean "not now" rather than "not like this"."""


class ClaudeProvider:
    """Replies and summaries from Claude."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        summary_model: str,
        system_prompt: str,
        max_tokens: int,
        timeout: float,
        max_retries: int,
    ) -> None:
        self.client = anthropic.Anthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )
        self.model, self.summary_model = model, summary_model
        self.system_prompt, self.max_tokens = system_prompt, max_tokens
        self.name = f"Claude · {model}"

    def stream_reply(
        self, turns: Sequence[Turn], prefix: str = "", note: str = ""
    ) -> Iterator[str]:
        messages = [{"role": turn.role, "content": turn.content} for turn in turns]
        if prefix:
            # Prefill: Claude carries on from the partial reply. The API refuses a final
            # assistant turn that ends in white space.
            messages.append({"role": "assistant", "content": prefix.rstrip()})
        wrote = False
        request_id = None
        try:
            with self.client.messages.stream(
                model=self.model,
                max_tokens=self.max_tokens,
                system=f"{self.system_prompt}\n\n{NOTE_INTRODUCTION}\n{note}"
                if note
                else self.system_prompt,
                messages=messages,
            ) as stream:
                request_id = stream.request_id
                for text in stream.text_stream:
                    wrote = True
                    yield text
        except (anthropic.APIError, httpx2.TransportError) as error:
            raise _model_error(error, wrote, request_id) from error

    def summarise(self, turns: Sequence[Turn]) -> str:
        transcript = "\n\n".join(f"{turn.role.upper()}: {turn.content}" for turn in turns)
        try:
            message = self.client.messages.create(
                model=self.summary_model,
                max_tokens=1024,
                system=SUMMARY_PROMPT,
                messages=[{"role": "user", "content": transcript}],
            )
        except (anthropic.APIError, httpx2.TransportError) as error:
            raise _model_error(error, False, None) from error
        return "".join(block.text for block in message.content if block.type == "text")


def _model_error(error: Exception, wrote: bool, request_id: str | None) -> ModelError:
    """The ModelError for what the SDK raised, logged with the request id."""
    request_id = getattr(error, "request_id", None) or request_id
    status = getattr(error, "status_code", None)
    if status is not None and status != 200 and status not in BUSY_STATUSES and status < 500:
        log.error(
            "Claude refused the request (HTTP %s, request id %s): %s", status, request_id, error
        )
        return ModelMisconfigured(f"Claude refused the request (HTTP {status})", request_id)
    log.warning("Claude request failed (request id %s): %r", request_id, error)
    if wrote:
        return ModelStreamBroken("the reply from Claude broke off", request_id)
    return ModelBusy("Claude is busy or unreachable", request_id)
