"""The offline model: a deterministic local responder and an extractive summariser."""

import re
import time
from collections.abc import Iterator, Sequence

from webapp.llm import END_TURN, Finished, ReplyEvent, SummaryText, Turn, Usage

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
SUMMARY_MAX_CHARS = 2000


def estimate_tokens(texts: Sequence[str]) -> int:
    """About four characters a token, the usual rule of thumb for English text: the offline
    model's count, and the split of a context being compacted; never what is billed."""
    return sum(len(text) for text in texts) // 4 + 1


def _first_sentence(text: str, limit: int = 200) -> str:
    sentence = SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


class OfflineProvider:
    """Answers with reference to what the user said; needs no network."""

    name = "offline model"

    def __init__(self, chunk_words: int = 3, chunk_delay: float = 0.0) -> None:
        self.chunk_words = chunk_words
        self.chunk_delay = chunk_delay

    def reply_text(self, turns: Sequence[Turn], note: str = "") -> str:
        """The whole reply the stream is cut from."""
        user_turns = [t.content for t in turns if t.role == "user"]
        if not user_turns:
            return "I'm the offline model. Ask me anything."
        latest = _first_sentence(user_turns[-1])
        lines = [f"You said: “{latest}”", ""]
        if len(user_turns) > 1:
            lines.append(
                f"This is message {len(user_turns)} of our conversation. "
                f"You started with: “{_first_sentence(user_turns[0], 120)}”"
            )
        else:
            lines.append("This is the start of our conversation.")
        if note:
            remembered = _first_sentence(note.splitlines()[0], 160)
            lines += ["", f"From my notes of our earlier conversation: {remembered}"]
        lines += [
            "",
            "I'm the **offline model**: a local stand-in that repeats what it was told, "
            "so the app works without a network.",
        ]
        return "\n".join(lines)

    def stream_reply(
        self, turns: Sequence[Turn], note: str = "", partial: str = ""
    ) -> Iterator[ReplyEvent]:
        whole = self.reply_text(turns, note)
        # Carrying on from a partial reply: the rest of the same text, as a model would.
        text = whole[len(partial) :] if whole.startswith(partial) else " (continued)"
        words = re.split(r"(\s+)", text)
        step = self.chunk_words * 2
        for start in range(0, len(words), step):
            if self.chunk_delay:
                time.sleep(self.chunk_delay)
            yield "".join(words[start : start + step])
        prompt = estimate_tokens([note, *(turn.content for turn in turns), partial])
        usage = Usage(input_tokens=prompt, output_tokens=estimate_tokens([text]))
        yield Finished(END_TURN, usage, self.name)

    def count_tokens(self, turns: Sequence[Turn], note: str = "") -> int:
        return estimate_tokens([note, *(turn.content for turn in turns)])

    def unavailable_models(self) -> dict[str, str]:
        return {}

    def summarise(self, turns: Sequence[Turn], *, unverified: bool = False) -> SummaryText:
        """An extractive summary (the offline model obeys nothing it reads, verified or not)."""
        text = self.extract(turns)
        usage = Usage(
            input_tokens=estimate_tokens([turn.content for turn in turns]),
            output_tokens=estimate_tokens([text]),
        )
        return SummaryText(text, END_TURN, usage)

    def extract(self, turns: Sequence[Turn]) -> str:
        """An extractive summary: the goal, then the first sentence of each later turn."""
        user_turns = [t for t in turns if t.role == "user"]
        if not user_turns:
            return "Nothing was discussed yet."
        lines = [f"Goal: {_first_sentence(user_turns[0].content)}"]
        for turn in turns[turns.index(user_turns[0]) + 1 :]:
            speaker = "User" if turn.role == "user" else "Assistant"
            lines.append(f"- {speaker}: {_first_sentence(turn.content)}")
        summary = "\n".join(lines)
        if len(summary) > SUMMARY_MAX_CHARS:
            # Keep the goal and the most recent points, which matter most for carrying on.
            head, tail = lines[0], "\n".join(lines[1:])[-(SUMMARY_MAX_CHARS - len(lines[0])) :]
            summary = head + "\n…" + tail[tail.find("\n") :]
        return summary
