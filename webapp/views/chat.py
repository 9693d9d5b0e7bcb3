"""Chat pages: the start page with this browser's conversations, and one conversation."""

import time

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for

from webapp import conversations
from webapp.conversations import Lifetimes, Message, MessageRejected
from webapp.llm import get_provider
from webapp.storage import get_redis
from webapp.views.identity import current_owner

bp = Blueprint("chat", __name__)


def _lifetimes() -> Lifetimes:
    config = current_app.config
    return Lifetimes(
        session_idle=int(config["SESSION_IDLE_SECONDS"]),
        session_max=int(config["SESSION_MAX_SECONDS"]),
        transcript_retention=int(config["TRANSCRIPT_RETENTION_SECONDS"]),
    )


def _message_from_form() -> Message:
    """The user's message; raises MessageRejected for empty or oversized text."""
    text = conversations.validate_user_text(
        request.form.get("text", ""), int(current_app.config["MAX_MESSAGE_CHARS"])
    )
    message_id = request.form.get("message_id", "")
    if not conversations.MESSAGE_ID.match(message_id):
        message_id = conversations.new_id()
    return Message(id=message_id, role="user", content=text, created_at=time.time())


def _owned_conversation(conversation_id: str) -> conversations.Conversation:
    """The conversation if it exists and belongs to this browser; 404 otherwise."""
    conversation = conversations.get_conversation(get_redis(), conversation_id)
    if conversation is None or conversation.owner != current_owner():
        abort(404)
    return conversation


@bp.get("/")
def index():
    return _render_index()


@bp.post("/")
def start():
    r, owner = get_redis(), current_owner()
    try:
        message = _message_from_form()
    except MessageRejected as error:
        return _render_index(error=str(error), draft=request.form.get("text", "")), 400
    conversation_id = conversations.create_conversation(r, owner, _lifetimes())
    conversations.send_message(r, get_provider(), conversation_id, owner, message, _lifetimes())
    return redirect(url_for("chat.conversation", conversation_id=conversation_id))


@bp.get("/c/<conversation_id>")
def conversation(conversation_id: str):
    return _render_conversation(_owned_conversation(conversation_id))


@bp.post("/c/<conversation_id>/messages")
def send(conversation_id: str):
    conversation = _owned_conversation(conversation_id)
    try:
        message = _message_from_form()
    except MessageRejected as error:
        return _render_conversation(
            conversation, error=str(error), draft=request.form.get("text", "")
        ), 400
    conversations.send_message(
        get_redis(), get_provider(), conversation.id, conversation.owner, message, _lifetimes()
    )
    return redirect(url_for("chat.conversation", conversation_id=conversation.id) + "#latest")


def _render_conversation(conversation, error: str | None = None, draft: str = ""):
    before = request.args.get("before", type=int)
    first_index, messages = conversations.read_page(
        get_redis(), conversation, int(current_app.config["PAGE_SIZE"]), before
    )
    return render_template(
        "chat/conversation.html",
        conversation=conversation,
        messages=messages,
        first_index=first_index,
        is_latest_page=before is None or before >= conversation.message_count,
        new_message_id=conversations.new_id(),
        error=error,
        draft=draft,
    )


def _render_index(error: str | None = None, draft: str = ""):
    return render_template(
        "chat/index.html",
        conversations=conversations.list_conversations(get_redis(), current_owner()),
        new_message_id=conversations.new_id(),
        error=error,
        draft=draft,
    )
