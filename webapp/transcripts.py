"""A conversation as its owner reads it: a page of its transcript, its state, its latest
reply, its draft, and the copy the browser keeps."""

from dataclasses import dataclass

import redis

from webapp import conversations, lifecycle, metrics, runs
from webapp.conversations import Conversation, Lifetimes, Message
from webapp.lifecycle import Session
from webapp.runs import Run, RunSettings


@dataclass(frozen=True)
class TranscriptPage:
    """Everything the conversation page shows."""

    conversation: Conversation
    session: Session | None
    state: str
    messages: list[Message]
    first_index: int
    """The index of the first of ``messages`` in the transcript."""
    is_latest_page: bool
    run: Run | None
    run_text: str
    """What the latest run has written so far, while it runs."""
    run_event_id: str
    """The id of its last chunk, for its watcher to carry on from."""
    draft: str
    browser_copy: list[Message]
    """The newest messages, for the browser to keep (their roles and texts: see
    lifecycle.parse_browser_copy)."""


def read_page(
    r: redis.Redis,
    conversation: Conversation,
    page_size: int,
    before: int | None,
    lifetimes: Lifetimes,
    run_settings: RunSettings,
) -> TranscriptPage:
    """The page of ``page_size`` messages before index ``before`` (default: the newest).

    A return to the newest page after the session ended counts once as a failed resume
    (the owner came back too late to carry on without catching up)."""
    # One round trip, one snapshot of the conversation's keys. The run is read before the
    # messages: a reply that ends in between is among the messages, and shown as still
    # being written (its watcher then hears of the end at once).
    pipe = r.pipeline(transaction=True)
    runs.queue_latest_run(pipe, conversation.id)
    conversations.queue_page(pipe, conversation, page_size, before)
    lifecycle.queue_read_session(pipe, conversation.id)
    conversations.queue_read_draft(pipe, conversation.id)
    run_fields, count, raw, session_fields, draft = pipe.execute()
    read = runs.run_of(conversation.id, run_fields)
    run = runs.run_as_seen(r, read, lifetimes, run_settings)
    if run is read:
        first_index, messages = conversations.page_of(conversation, page_size, before, count, raw)
    else:  # its writer died: ended as interrupted, its partial text kept in the messages
        first_index, messages = conversations.read_page(r, conversation, page_size, before)
    run_text, run_event_id = runs.run_text(r, run) if run and run.running else ("", "0-0")
    is_latest_page = before is None or before >= conversation.message_count
    if is_latest_page and run and not run.running and conversation.seen_run != run.id:
        conversations.mark_seen(r, conversation.id, run.id)  # once a reply: the list's news
    session = lifecycle.session_of(session_fields)
    if (
        session is None
        and is_latest_page
        and lifecycle.note_return_after_expiry(r, conversation.id)
    ):
        metrics.count_resume_failure(r, metrics.SESSION_ENDED)
    copy = [m for m in messages if m.role != lifecycle.NOTE]
    return TranscriptPage(
        conversation=conversation,
        session=session,
        state=lifecycle.state_of(conversation, session),
        messages=messages,
        first_index=first_index,
        is_latest_page=is_latest_page,
        run=run,
        run_text=run_text,
        run_event_id=run_event_id,
        draft=draft or "",
        browser_copy=copy[-lifecycle.COPY_MAX_MESSAGES :],
    )


@dataclass(frozen=True)
class Recap:
    """What the idle dialog says of a conversation."""

    exchanges: int
    """How many messages the user has sent."""
    last_topic: str
    """The latest of them, shortened to a title."""


def recap(r: redis.Redis, conversation_id: str) -> Recap:
    asked = [m.content for m in conversations.read_messages(r, conversation_id) if m.role == "user"]
    return Recap(len(asked), conversations.make_title(asked[-1]) if asked else "")
