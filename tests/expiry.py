"""What Redis does when a session's or a conversation's time runs out, done at once, for the
tests that need an ended one without waiting for its TTL: its keys go, and the deadline the
app mirrored for it (see webapp.deadlines) is now. Tests of the mirrors themselves wait for
real TTLs instead."""

import time

from webapp.storage import keys


def end_session(r, conversation_id: str) -> None:
    """The conversation's session ends now, as its TTL running out would end it."""
    r.delete(keys.conversation_session(conversation_id))
    now = time.time()
    for mirror in (keys.DEADLINES_SESSIONS, keys.DEADLINES_PARKED):
        r.zadd(mirror, {conversation_id: now}, xx=True)


def end_conversation(r, conversation_id: str) -> None:
    """The whole conversation ends now, as its TTLs running out would end it."""
    r.delete(*keys.conversation_keys(conversation_id))
    now = time.time()
    for mirror in (keys.DEADLINES_CONVERSATIONS, keys.DEADLINES_SESSIONS, keys.DEADLINES_PARKED):
        r.zadd(mirror, {conversation_id: now}, xx=True)
