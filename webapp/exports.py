"""Export and import: a conversation as Markdown or JSON, an owner's conversations as one
JSON file, and a conversation made again from such a JSON file, read as the untrusted input
it is (the way a browser's copy is: roles, sizes and counts checked, nothing else kept)."""

import json
from datetime import UTC, datetime

import redis

from webapp import conversations
from webapp.conversations import Conversation, Lifetimes, Message
from webapp.rendering import iso_time
from webapp.storage import keys

FORMAT = "resume-chat.conversation/1"
ALL_FORMAT = "resume-chat.conversations/1"
ROLES = ("user", "assistant", "note")
STATUSES = {
    "user": {None},
    "assistant": {None, "stopped", "interrupted", "failed", "cut_off", "declined"},
    "note": {"model", "extractive", "browser"},
}
"""What each role's status may be, as the app stores them."""
MAX_MESSAGES = 5_000
MAX_MESSAGE_CHARS = 200_000
"""Per message: a long reply, not a user's message (those are held to MAX_MESSAGE_CHARS)."""
TITLE_CHARS = 200
LABELS = {"user": "You", "assistant": "Assistant", "note": "Summary"}


class ImportRejected(ValueError):
    """The file can't be imported; the message says why, for the page."""


def export(r: redis.Redis, conversation: Conversation) -> dict:
    """The conversation as its JSON export: title, times, fork origin and every message."""
    forked_from = r.hget(keys.conversation_meta(conversation.id), "forked_from")
    messages = conversations.read_messages(r, conversation.id)
    return {
        "format": FORMAT,
        "title": conversation.title,
        "created_at": iso_time(conversation.created_at),
        "forked_from": forked_from,
        "messages": [_exported_message(message) for message in messages],
    }


def _exported_message(message: Message) -> dict:
    fields = {
        "role": message.role,
        "content": message.content,
        "created_at": iso_time(message.created_at),
        "status": message.status,
        "tokens": message.tokens,
        "replaced_tokens": message.replaced_tokens,
    }
    return {name: value for name, value in fields.items() if value is not None}


def export_owner(r: redis.Redis, owner: str) -> dict:
    """Every conversation of ``owner`` (newest activity first), as one JSON file."""
    ids = r.zrevrange(keys.owner_conversations(owner), 0, -1)
    found = [conversations.get_conversation(r, conversation_id) for conversation_id in ids]
    return {
        "format": ALL_FORMAT,
        "conversations": [export(r, c) for c in found if c is not None and c.owner == owner],
    }


def to_markdown(exported: dict) -> str:
    """A conversation's JSON export as Markdown, to read."""
    lines = [f"# {exported['title'] or 'Conversation'}", ""]
    if exported.get("forked_from"):
        lines += [f"Forked from conversation {exported['forked_from']}.", ""]
    for message in exported["messages"]:
        status = f" ({message['status']})" if message.get("status") else ""
        lines += [f"## {LABELS[message['role']]}{status}, {message['created_at']}", ""]
        lines += [message["content"], ""]
    return "\n".join(lines)


def parse_import(raw: bytes) -> tuple[str, list[Message]]:
    """The title and messages of a conversation's JSON export; ImportRejected otherwise."""
    try:
        exported = json.loads(raw)
    except (ValueError, RecursionError) as error:  # RecursionError: nested a thousand deep
        raise ImportRejected("it is not JSON") from error
    if not isinstance(exported, dict) or exported.get("format") != FORMAT:
        raise ImportRejected(f"it is not one conversation exported from here ({FORMAT})")
    title = exported.get("title") or ""
    items = exported.get("messages")
    if not isinstance(title, str) or len(title) > TITLE_CHARS:
        raise ImportRejected(f"its title is not text of at most {TITLE_CHARS} characters")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_MESSAGES:
        raise ImportRejected(f"it holds 1 to {MAX_MESSAGES:,} messages")
    messages = [_imported_message(item) for item in items]
    first_user = next((m.content for m in messages if m.role == "user"), "")
    return title or first_user, messages


def _imported_message(item) -> Message:
    allowed = {"role", "content", "created_at", "status", "tokens", "replaced_tokens"}
    if not isinstance(item, dict) or not {"role", "content"} <= set(item) <= allowed:
        raise ImportRejected("each message has a role and a content, and nothing unknown")
    role, content, status = item["role"], item["content"], item.get("status")
    if role not in ROLES or not isinstance(content, str) or status not in STATUSES[role]:
        raise ImportRejected("roles are user, assistant or note; contents are text")
    if problem := conversations.outside_text_problem(content, MAX_MESSAGE_CHARS):
        raise ImportRejected(problem)
    tokens = [item.get(name) for name in ("tokens", "replaced_tokens")]
    if any(value is not None and (type(value) is not int or value < 0) for value in tokens):
        raise ImportRejected("token counts are whole numbers")
    return Message(
        conversations.new_message_id(),
        role,
        content,
        _time(item.get("created_at")),
        status,
        *tokens,
    )


def _time(value) -> float:
    """A message's time as exported; one that can't be read is now."""
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return datetime.now(UTC).timestamp()


def import_conversation(
    r: redis.Redis,
    owner: str,
    title: str,
    messages: list[Message],
    lifetimes: Lifetimes,
    conversation_id: str,
) -> str:
    """A new conversation of ``owner`` holding ``messages`` (see parse_import), created as
    ``conversation_id`` (as a quota reserved it); its id."""
    conversations.create_conversation(r, owner, lifetimes, conversation_id)
    conversations.fill_conversation(
        r, conversation_id, [m.to_json() for m in messages], title, lifetimes
    )
    return conversation_id
