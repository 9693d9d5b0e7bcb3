"""Deterministic, realistic chat messages and the naive JSON-blob store they are compared on."""

import json
import random
from dataclasses import asdict

import redis

from webapp.conversations import Message, new_message_id

SENTENCES = (
    "Can you tighten the summary at the top of my résumé?",
    "I led the migration of our billing service from cron jobs to a queue.",
    "The team shipped the new dashboard two weeks before the quarter closed.",
    "Recruiters skim, so put the impact first and the tools second.",
    "Reduced p95 latency from 900 ms to 120 ms by caching session lookups in Redis.",
    "Should I mention the startup that folded after eight months?",
    "Mentored three junior engineers through their first on-call rotation.",
    "Here is a rewrite that keeps each bullet under two lines:",
    "Quantify it: how many customers, how much revenue, how much time saved?",
    "I am applying for a staff role, so the scope of my work matters more than the stack.",
    "Owned the incident postmortem process and cut repeat incidents by 40 %.",
    "That phrasing sounds passive — start with the verb instead.",
    "Wrote the onboarding guide every new hire now reads in their first week.",
    "For the cover letter, name the product you want to work on and why.",
    "Let's drop the objective line; it repeats what the summary already says.",
)
START_TIME = 1_760_000_000.0


def realistic_messages(count: int, seed: int) -> list[Message]:
    """``count`` messages of about 150 to 700 characters, alternating user and assistant turns."""
    rng = random.Random(seed)
    messages = []
    for index in range(count):
        target = rng.randint(150, 600)
        sentences = [rng.choice(SENTENCES)]
        while sum(len(sentence) + 1 for sentence in sentences) < target:
            sentences.append(rng.choice(SENTENCES))
        content = " ".join(sentences)
        messages.append(
            Message(
                id=new_message_id(),
                role="user" if index % 2 == 0 else "assistant",
                content=content,
                created_at=START_TIME + index * 7.5,
            )
        )
    return messages


class JsonBlobStore:
    """The older agent code's store: the whole history as one JSON blob, rewritten per append."""

    def __init__(self, r: redis.Redis, key: str, retention: int) -> None:
        self.r = r
        self.key = key
        self.retention = retention

    def replace(self, messages: list[Message]) -> None:
        """Store exactly ``messages`` as the history."""
        self.r.set(self.key, json.dumps([asdict(m) for m in messages]), ex=self.retention)

    def newest(self, count: int) -> list[Message]:
        """The newest ``count`` messages, oldest first: the whole history is read and decoded."""
        return [Message(**fields) for fields in json.loads(self.r.get(self.key) or "[]")[-count:]]

    def append(self, message: Message) -> None:
        """GET, decode, append, encode, SET: two round trips and the whole history each time."""
        history = json.loads(self.r.get(self.key) or "[]")
        history.append(asdict(message))
        self.r.set(self.key, json.dumps(history), ex=self.retention)
