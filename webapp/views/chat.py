"""Chat pages: the start page, one conversation, and its replies (runs): watch, stop,
continue, retry."""

import json
import re
import time

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)

from webapp import (
    config,
    conversations,
    deletion,
    lifecycle,
    quotas,
    resume_codes,
    sidebar,
    transcripts,
)
from webapp.conversations import Conversation, ConversationGone, Message, MessageRejected
from webapp.quotas import QuotaReached
from webapp.rendering import iso_time
from webapp.replies import Replies, UnknownRun
from webapp.runs import RunInProgress, SessionExpired, follow
from webapp.security import same_site_path
from webapp.storage import WATCH_BLOCK_MS, get_blocking_redis, get_redis
from webapp.views.identity import client_address, current_owner, login_ran_out
from webapp.watchers import TooManyStreams

bp = Blueprint("chat", __name__)

EVENT_ID = re.compile(r"^\d+-\d+$")
RUN_IN_PROGRESS_TEXT = "A reply is still being written. Wait for it to finish, or stop it."
SESSION_EXPIRED_TEXT = (
    "This session has ended. Choose Catch me up or Start fresh below; your text is kept."
)


def _replies() -> Replies:
    return current_app.extensions["replies"]


def refused_by_quota(page, quota: QuotaReached):
    """``page`` (which keeps what was typed) as the answer to a request a quota refused."""
    headers = {"Retry-After": str(quota.retry_after)} if quota.retry_after else {}
    return page, 429, headers


def _message_from_form() -> Message:
    """The user's message; raises MessageRejected for empty or oversized text."""
    text = conversations.validate_user_text(
        request.form.get("text", ""), int(current_app.config["MAX_MESSAGE_CHARS"])
    )
    message_id = request.form.get("message_id", "")
    if not conversations.MESSAGE_ID.match(message_id):
        message_id = conversations.new_message_id()
    return Message(id=message_id, role="user", content=text, created_at=time.time())


def owned_conversation(conversation_id: str) -> Conversation:
    """The conversation if it exists and belongs to this visitor; 404 otherwise (see
    _visible)."""
    conversation = _visible(conversations.get_conversation(get_redis(), conversation_id))
    if conversation is None:
        abort(404)
    return conversation


def _visible(conversation: Conversation | None) -> Conversation | None:
    """``conversation``, read already, if it belongs to this visitor; None for one that is
    unknown or another's: both get the same answer, so no id can be probed. A browser whose
    login ran out is asked to log in again first, whatever the id (the login page brings
    it back)."""
    if conversation is not None and conversation.owner == current_owner():
        return conversation
    if login_ran_out():
        abort(redirect(url_for("auth.login", next=request.full_path.rstrip("?"))))
    return None


def _to_latest(conversation_id: str):
    return redirect(url_for("chat.conversation", conversation_id=conversation_id) + "#latest")


@bp.get("/")
def index():
    return _render_index()


@bp.post("/")
def start():
    draft = request.form.get("text", "")
    try:
        conversation_id = _replies().start_conversation(
            current_owner(), client_address(), _message_from_form()
        )
    except MessageRejected as error:
        return _render_index(error=str(error), draft=draft), 400
    except QuotaReached as quota:
        return refused_by_quota(_render_index(error=quota.text, draft=draft), quota)
    return _to_latest(conversation_id)


@bp.get("/c/<conversation_id>")
def conversation(conversation_id: str):
    # Who may see it is read with the visitor's list of conversations, in one round trip:
    # the transcript's own read (one transaction) and the list's rows follow.
    pipe = get_redis().pipeline(transaction=False)
    conversations.queue_get_conversation(pipe, conversation_id)
    sidebar.queue_listed(pipe, current_owner())
    meta, listed = pipe.execute()
    conversation = _visible(conversations.conversation_of(conversation_id, meta))
    if conversation is None:
        # Gone (retention over, cleared, or Redis lost it), or never this visitor's: the
        # page offers to catch up from the copy this browser may have kept.
        return render_template("chat/gone.html", conversation_id=conversation_id), 404
    return _render_conversation(conversation, listed=listed)


@bp.post("/restore")
def restore():
    """Catch me up from this browser's copy of a conversation that is gone."""
    try:
        copy = lifecycle.parse_browser_copy(
            request.form.get("copy", ""), int(current_app.config["MAX_MESSAGE_CHARS"])
        )
        conversation_id = _replies().restore(current_owner(), client_address(), copy)
    except lifecycle.CopyRejected as rejected:
        page = render_template("chat/gone.html", conversation_id="", rejected=str(rejected))
        return page, 400
    except QuotaReached as quota:
        page = render_template("chat/gone.html", conversation_id="", rejected=quota.text)
        return refused_by_quota(page, quota)
    return _to_latest(conversation_id)


@bp.post("/c/<conversation_id>/messages")
def send(conversation_id: str):
    conversation = owned_conversation(conversation_id)
    draft = request.form.get("text", "")
    try:
        _replies().send(conversation, client_address(), _message_from_form())
    except MessageRejected as error:
        return _render_conversation(conversation, error=str(error), draft=draft), 400
    except RunInProgress:
        return _render_conversation(conversation, error=RUN_IN_PROGRESS_TEXT, draft=draft), 409
    except QuotaReached as quota:
        return refused_by_quota(
            _render_conversation(conversation, error=quota.text, draft=draft), quota
        )
    except SessionExpired:
        return _render_conversation(conversation, error=SESSION_EXPIRED_TEXT, draft=draft), 409
    except ConversationGone:
        abort(404)
    return _to_latest(conversation.id)


@bp.post("/c/<conversation_id>/runs/<run_id>/stop")
def stop(conversation_id: str, run_id: str):
    try:
        _replies().stop(owned_conversation(conversation_id), run_id)
    except UnknownRun:
        abort(404)
    return _to_latest(conversation_id)


@bp.post("/c/<conversation_id>/runs/<run_id>/continue")
def continue_reply(conversation_id: str, run_id: str):
    return _redo(conversation_id, run_id, carry_on=True)


@bp.post("/c/<conversation_id>/runs/<run_id>/retry")
def retry(conversation_id: str, run_id: str):
    return _redo(conversation_id, run_id, carry_on=False)


def _redo(conversation_id: str, run_id: str, carry_on: bool):
    """Write the reply of a run that ended early again: from its partial text, or afresh."""
    conversation = owned_conversation(conversation_id)
    try:
        _replies().redo(conversation, client_address(), run_id, carry_on=carry_on)
    except (UnknownRun, ConversationGone):
        abort(404)
    except QuotaReached as quota:
        return refused_by_quota(_render_conversation(conversation, error=quota.text), quota)
    return _to_latest(conversation.id)


@bp.post("/c/<conversation_id>/catch-up")
def catch_up(conversation_id: str):
    """Where were we? Summarise the conversation and start a new session from the summary."""
    conversation = owned_conversation(conversation_id)
    try:
        _replies().catch_up(conversation, client_address())
    except QuotaReached as quota:
        return refused_by_quota(_render_conversation(conversation, error=quota.text), quota)
    except ConversationGone:
        abort(404)
    return _to_latest(conversation.id)


@bp.post("/c/<conversation_id>/draft")
def save_draft(conversation_id: str):
    """Keep what is being typed (sent by the page's script as the user types)."""
    conversation = owned_conversation(conversation_id)
    conversations.save_draft(get_redis(), conversation.id, request.form.get("text", ""))
    return "", 204


@bp.route("/c/<conversation_id>/rename", methods=["GET", "POST"])
def rename(conversation_id: str):
    """Rename or delete a conversation, from the list beside the pages (its ⋯): the page
    that asks, then the new name given."""
    conversation = owned_conversation(conversation_id)
    if request.method == "GET":
        back = same_site_path(request.args.get("next", ""))
        return render_template("chat/rename.html", conversation=conversation, next=back)
    try:
        conversations.rename(get_redis(), conversation.id, request.form.get("title", ""))
    except MessageRejected as error:
        return _render_conversation(conversation, error=str(error)), 400
    back = request.form.get("next") or url_for("chat.conversation", conversation_id=conversation.id)
    return redirect(same_site_path(back))


@bp.post("/c/<conversation_id>/fork")
def fork(conversation_id: str):
    """A new conversation with the transcript up to the chosen message."""
    conversation = owned_conversation(conversation_id)
    through = request.form.get("through", type=int)
    if through is None or not 0 <= through < conversation.message_count:
        abort(400)
    r, settings = get_redis(), config.current()
    try:
        with quotas.new_conversation(
            r,
            settings.quotas,
            conversation.owner,
            client_address(),
            settings.lifetimes.transcript_retention,
        ) as fork_id:
            conversations.fork_conversation(
                r, conversation.id, conversation.owner, through, settings.lifetimes, fork_id
            )
    except QuotaReached as quota:
        return refused_by_quota(_render_conversation(conversation, error=quota.text), quota)
    except ConversationGone:
        abort(404)
    return _to_latest(fork_id)


@bp.post("/c/<conversation_id>/park")
def park(conversation_id: str):
    """Issue a resume code and park the conversation under it. The idle timer asks for JSON;
    the "Get a resume code" button (no script needed) gets the page with the code."""
    conversation = owned_conversation(conversation_id)
    r = get_redis()
    try:
        # A code asked for as the session ended (none is issued) counts too: it is rare.
        quotas.take_resume_code(r, config.current().quotas, conversation.owner)
    except QuotaReached as quota:
        if request.accept_mimetypes.best == "application/json":
            return refused_by_quota({"error": quota.text}, quota)
        return refused_by_quota(_render_conversation(conversation, error=quota.text), quota)
    issued = resume_codes.park(
        r,
        current_app.config["SECRET_KEY"],
        conversation,
        int(current_app.config["RESUME_CODE_TTL_SECONDS"]),
    )
    if issued is None:  # the session ended meanwhile: the page offers to catch up
        return redirect(url_for("chat.conversation", conversation_id=conversation.id))
    if request.accept_mimetypes.best == "application/json":
        recap = transcripts.recap(r, conversation.id)
        return {
            "code": issued.code,
            "valid_until": iso_time(issued.expires_at),
            "exchanges": recap.exchanges,
            "last_topic": recap.last_topic,
        }
    return _render_conversation(conversation, issued_code=issued)


@bp.post("/c/<conversation_id>/touch")
def touch(conversation_id: str):
    """The user is here: slide the session (and end any parking). Keep chatting posts here."""
    conversation = owned_conversation(conversation_id)
    left = lifecycle.touch(get_redis(), conversation, config.current().lifetimes)
    if request.accept_mimetypes.best == "application/json":
        return {"seconds_left": left}
    return redirect(url_for("chat.conversation", conversation_id=conversation.id) + "#latest")


@bp.post("/c/<conversation_id>/delete")
def delete(conversation_id: str):
    """Delete a conversation now, after asking once."""
    conversation = owned_conversation(conversation_id)
    if request.form.get("confirm") != "yes":
        return render_template("chat/delete.html", conversation=conversation)
    deletion.delete_conversation(get_redis(), conversation.id, conversation.owner)
    return redirect(url_for("chat.index"))


@bp.get("/c/<conversation_id>/runs/<run_id>/events")
def events(conversation_id: str, run_id: str):
    """Server-Sent Events: the run's chunks after Last-Event-ID (or ?after=), live, then
    an ``end`` event with the status."""
    conversation = owned_conversation(conversation_id)
    after = request.headers.get("Last-Event-ID") or request.args.get("after", "0-0")
    if not EVENT_ID.match(after):
        abort(400)
    try:
        watch = current_app.extensions["watchers"].open(conversation.owner)
    except TooManyStreams:
        # EventSource gives up on it; the page then refreshes itself until the reply is done.
        return "Too many streams are open; the page refreshes instead.", 429
    r, stopping = get_blocking_redis(), current_app.extensions["run_worker"].stopping
    settings = config.current()

    def stream():
        yield "retry: 1000\n\n"
        watched = follow(
            r, conversation.id, run_id, after, WATCH_BLOCK_MS, settings.lifetimes, settings.runs
        )
        for event in watched:
            if stopping.is_set():
                return  # shutting down: the browser reconnects from its last event
            watch.renew()
            if event is None:
                yield ": keep-alive\n\n"
            elif event.status:
                data = {"status": event.status, "error_kind": event.error_kind}
                yield f"id: {event.id}\nevent: end\ndata: {json.dumps(data)}\n\n"
                return
            elif event.phase:
                phase = json.dumps({"phase": event.phase})
                yield f"id: {event.id}\nevent: phase\ndata: {phase}\n\n"
            else:
                yield f"id: {event.id}\ndata: {json.dumps({'text': event.text})}\n\n"

    response = Response(
        stream(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    response.call_on_close(watch.close)
    return response


def _render_index(error: str | None = None, draft: str = ""):
    return render_template(
        "chat/index.html",
        sidebar=sidebar.read_sidebar(get_redis(), current_owner()),
        new_message_id=conversations.new_message_id(),
        error=error,
        draft=draft,
    )


def _render_conversation(
    conversation: Conversation,
    error: str | None = None,
    draft: str = "",
    issued_code: resume_codes.IssuedCode | None = None,
    listed: list[str] | None = None,
):
    """The conversation's page; ``listed``, the owner's listed ids if already read (see
    sidebar.queue_listed)."""
    settings = config.current()
    r = get_redis()
    page = transcripts.read_page(
        r,
        conversation,
        int(current_app.config["PAGE_SIZE"]),
        request.args.get("before", type=int),
        settings.lifetimes,
        settings.runs,
    )
    return render_template(
        "chat/conversation.html",
        **{**vars(page), "draft": draft or page.draft},
        sidebar=(
            sidebar.read_sidebar(r, conversation.owner)
            if listed is None
            else sidebar.sidebar_of(r, conversation.owner, listed)
        ),
        new_message_id=conversations.new_message_id(),
        error=error,
        issued_code=issued_code,
    )
