"""Chat pages: the start page, one conversation, and its replies (runs): watch, stop,
continue, retry."""

import contextlib
import json
import re
import time
from collections.abc import Iterator

import redis
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
from flask_login import current_user

from webapp import (
    admin,
    config,
    conversations,
    lifecycle,
    metrics,
    rate_limits,
    resume_codes,
    runs,
    summaries,
)
from webapp.conversations import Conversation, Message, MessageRejected
from webapp.llm import get_provider
from webapp.rendering import format_time
from webapp.runs import Run, RunInProgress, SessionExpired
from webapp.storage import WATCH_BLOCK_MS, get_blocking_redis, get_redis
from webapp.views.identity import current_owner

bp = Blueprint("chat", __name__)

EVENT_ID = re.compile(r"^\d+-\d+$")
RUN_IN_PROGRESS_TEXT = "A reply is still being written. Wait for it to finish, or stop it."
SESSION_EXPIRED_TEXT = (
    "This session has ended. Choose Catch me up or Start fresh below; your text is kept."
)
TOO_MANY_TEXT = (
    "You're asking faster than the assistant can answer. Wait a minute, then send again: "
    "your message is still in the box."
)


def _worker():
    return current_app.extensions["run_worker"]


def _message_from_form() -> Message:
    """The user's message; raises MessageRejected for empty or oversized text."""
    text = conversations.validate_user_text(
        request.form.get("text", ""), int(current_app.config["MAX_MESSAGE_CHARS"])
    )
    message_id = request.form.get("message_id", "")
    if not conversations.MESSAGE_ID.match(message_id):
        message_id = conversations.new_id()
    return Message(id=message_id, role="user", content=text, created_at=time.time())


def _owned_conversation(conversation_id: str) -> Conversation:
    """The conversation if it exists and belongs to this visitor; 404 otherwise. A visitor
    who is not logged in is first asked to log in if an account owns it."""
    return _checked_owner(conversations.get_conversation(get_redis(), conversation_id))


def _checked_owner(conversation: Conversation | None) -> Conversation:
    """``conversation``, read already, if it exists and belongs to this visitor (see
    _owned_conversation)."""
    if conversation is None:
        abort(404)
    if conversation.owner.startswith("user:") and not current_user.is_authenticated:
        abort(redirect(url_for("auth.login", next=request.full_path.rstrip("?"))))
    if conversation.owner != current_owner():
        abort(404)
    return conversation


MODEL_CALLS = "model-calls"
"""The scope of the model-call windows, in their keys."""


class TooManyModelCalls(Exception):
    """This person asked for more replies per minute than allowed."""


class ModelCallSlot:
    """One of this person's model-call slots, taken for a call about to be made."""

    def __init__(self, r: redis.Redis, slot: rate_limits.Slot) -> None:
        self._r, self._slot = r, slot

    def give_back(self) -> None:
        """No call is made after all: free the slot (once, however often asked)."""
        if self._slot is not None:
            rate_limits.give_back_slot(self._r, self._slot)
            self._slot = None


@contextlib.contextmanager
def _model_call() -> Iterator[ModelCallSlot]:
    """Take one of this person's MODEL_CALLS_PER_MINUTE slots for the block, or raise
    TooManyModelCalls. Only a call made uses one up: the slot is given back if the block
    raises (RunInProgress, SessionExpired, the conversation gone...) or gives it back."""
    r = get_redis()
    per_minute = rate_limits.per_minute(int(current_app.config["MODEL_CALLS_PER_MINUTE"]))
    slot = rate_limits.reserve_slot(r, (per_minute,), MODEL_CALLS, current_owner())
    if slot is None:
        raise TooManyModelCalls
    call = ModelCallSlot(r, slot)
    try:
        yield call
    except Exception:
        call.give_back()
        raise


def _start_reply(call: ModelCallSlot, conversation_id: str, **how) -> None:
    """Start a run (see runs.start_run) with the slot ``call`` took, and hand it to this
    process's worker."""
    run = runs.start_run(
        get_redis(),
        conversation_id,
        config.lifetimes(current_app.config),
        config.run_settings(current_app.config),
        **how,
    )
    if run is None:
        call.give_back()  # a repeat of a message already sent: its reply is under way
    else:
        _worker().submit(run, how.get("prefix", ""))


def _to_latest(conversation_id: str):
    return redirect(url_for("chat.conversation", conversation_id=conversation_id) + "#latest")


@bp.get("/")
def index():
    return _render_index()


@bp.post("/")
def start():
    draft = request.form.get("text", "")
    try:
        message = _message_from_form()
        with _model_call() as call:
            conversation_id = conversations.create_conversation(
                get_redis(), current_owner(), config.lifetimes(current_app.config)
            )
            _start_reply(call, conversation_id, user_message=message)
    except MessageRejected as error:
        return _render_index(error=str(error), draft=draft), 400
    except TooManyModelCalls:
        return _render_index(error=TOO_MANY_TEXT, draft=draft), 429
    return _to_latest(conversation_id)


@bp.get("/c/<conversation_id>")
def conversation(conversation_id: str):
    conversation = conversations.get_conversation(get_redis(), conversation_id)
    if conversation is None:
        # Gone (retention over, cleared, or Redis lost it): the page offers to catch up from
        # the copy this browser may have kept.
        metrics.count_resume_failure(get_redis(), "gone")
        return render_template("chat/gone.html", conversation_id=conversation_id), 404
    return _render_conversation(_checked_owner(conversation))


@bp.post("/restore")
def restore():
    """Catch me up from this browser's copy of a conversation that is gone."""
    try:
        copy = lifecycle.parse_browser_copy(
            request.form.get("copy", ""), int(current_app.config["MAX_MESSAGE_CHARS"])
        )
        with _model_call():
            conversation_id = lifecycle.restore_from_copy(
                get_redis(),
                get_provider(),
                current_owner(),
                copy,
                config.lifetimes(current_app.config),
            )
    except lifecycle.CopyRejected as rejected:
        page = render_template("chat/gone.html", conversation_id="", rejected=str(rejected))
        return page, 400
    except TooManyModelCalls:
        return render_template("chat/gone.html", conversation_id="", rejected=TOO_MANY_TEXT), 429
    metrics.count_catch_up(get_redis(), summaries.BROWSER)
    return _to_latest(conversation_id)


@bp.post("/c/<conversation_id>/messages")
def send(conversation_id: str):
    conversation = _owned_conversation(conversation_id)
    draft = request.form.get("text", "")
    try:
        message = _message_from_form()
        with _model_call() as call:
            _start_reply(call, conversation.id, user_message=message)
    except MessageRejected as error:
        return _render_conversation(conversation, error=str(error), draft=draft), 400
    except RunInProgress:
        return _render_conversation(conversation, error=RUN_IN_PROGRESS_TEXT, draft=draft), 409
    except TooManyModelCalls:
        return _render_conversation(conversation, error=TOO_MANY_TEXT, draft=draft), 429
    except SessionExpired:
        return _render_conversation(conversation, error=SESSION_EXPIRED_TEXT, draft=draft), 409
    return _to_latest(conversation.id)


def _owned_run(conversation_id: str, run_id: str) -> tuple[Conversation, Run]:
    """The conversation's latest run, if it is ``run_id``; 404 otherwise."""
    conversation = _owned_conversation(conversation_id)
    run = runs.latest_run(get_redis(), conversation.id)
    if run is None or run.id != run_id:
        abort(404)
    return conversation, run


@bp.post("/c/<conversation_id>/runs/<run_id>/stop")
def stop(conversation_id: str, run_id: str):
    _, run = _owned_run(conversation_id, run_id)
    if run.running:
        runs.request_stop(
            get_redis(),
            run,
            config.lifetimes(current_app.config),
            config.run_settings(current_app.config),
        )
    return _to_latest(conversation_id)


@bp.post("/c/<conversation_id>/runs/<run_id>/continue")
def continue_reply(conversation_id: str, run_id: str):
    return _redo(conversation_id, run_id, carry_on=True)


@bp.post("/c/<conversation_id>/runs/<run_id>/retry")
def retry(conversation_id: str, run_id: str):
    return _redo(conversation_id, run_id, carry_on=False)


def _redo(conversation_id: str, run_id: str, carry_on: bool):
    """Write the reply of a run that ended early again: from its partial text, or afresh."""
    conversation, run = _owned_run(conversation_id, run_id)
    if run.status not in runs.ENDED_EARLY:
        return _to_latest(conversation.id)  # already done or running: nothing to redo
    prefix = ""
    if carry_on:
        last = conversations.read_messages(get_redis(), conversation.id, -1, -1)
        if last and last[0].id == run.message_id:
            prefix = last[0].content.rstrip()
    try:
        # If another tab pressed it first, its run is the one to watch; if the session has
        # ended meanwhile, the page offers to catch up. Either way, the slot is given back.
        with contextlib.suppress(RunInProgress, SessionExpired), _model_call() as call:
            _start_reply(call, conversation.id, replacing=run, prefix=prefix)
    except TooManyModelCalls:
        return _render_conversation(conversation, error=TOO_MANY_TEXT), 429
    return _to_latest(conversation.id)


@bp.post("/c/<conversation_id>/catch-up")
def catch_up(conversation_id: str):
    """Where were we? Summarise the conversation and start a new session from the summary."""
    conversation = _owned_conversation(conversation_id)
    try:
        with _model_call():
            summary = lifecycle.catch_up(
                get_redis(),
                get_provider(),
                conversation.id,
                config.lifetimes(current_app.config),
                int(current_app.config["CONTEXT_BUDGET_TOKENS"]),
            )
    except TooManyModelCalls:
        return _render_conversation(conversation, error=TOO_MANY_TEXT), 429
    if summary:
        metrics.count_catch_up(get_redis(), summary.source)
    return _to_latest(conversation.id)


@bp.post("/c/<conversation_id>/draft")
def save_draft(conversation_id: str):
    """Keep what is being typed (sent by the page's script as the user types)."""
    conversation = _owned_conversation(conversation_id)
    conversations.save_draft(get_redis(), conversation.id, request.form.get("text", ""))
    return "", 204


@bp.post("/c/<conversation_id>/fork")
def fork(conversation_id: str):
    """A new conversation with the transcript up to the chosen message."""
    conversation = _owned_conversation(conversation_id)
    through = request.form.get("through", type=int)
    if through is None or not 0 <= through < conversation.message_count:
        abort(400)
    fork_id = conversations.fork_conversation(
        get_redis(),
        conversation.id,
        conversation.owner,
        through,
        config.lifetimes(current_app.config),
    )
    return _to_latest(fork_id)


@bp.post("/c/<conversation_id>/park")
def park(conversation_id: str):
    """Issue a resume code and park the conversation under it. The idle timer asks for JSON;
    the "Get a resume code" button (no script needed) gets the page with the code."""
    conversation = _owned_conversation(conversation_id)
    r = get_redis()
    issued = resume_codes.park(
        r,
        current_app.config["SECRET_KEY"],
        conversation,
        int(current_app.config["RESUME_CODE_TTL_SECONDS"]),
    )
    if issued is None:  # the session ended meanwhile: the page offers to catch up
        return redirect(url_for("chat.conversation", conversation_id=conversation.id))
    metrics.count_resume_code_issued(r)
    if request.accept_mimetypes.best == "application/json":
        messages = conversations.read_messages(r, conversation.id)
        asked = [m.content for m in messages if m.role == "user"]
        return {
            "code": issued.code,
            "valid_until": format_time(issued.expires_at),
            "exchanges": len(asked),
            "last_topic": conversations.make_title(asked[-1]) if asked else "",
        }
    return _render_conversation(conversation, issued_code=issued)


@bp.post("/c/<conversation_id>/touch")
def touch(conversation_id: str):
    """The user is here: slide the session (and end any parking). Keep chatting posts here."""
    conversation = _owned_conversation(conversation_id)
    left = lifecycle.touch(get_redis(), conversation.id, config.lifetimes(current_app.config))
    if request.accept_mimetypes.best == "application/json":
        return {"seconds_left": left}
    return redirect(url_for("chat.conversation", conversation_id=conversation.id) + "#latest")


@bp.post("/c/<conversation_id>/delete")
def delete(conversation_id: str):
    """Delete a conversation now, after asking once."""
    conversation = _owned_conversation(conversation_id)
    if request.form.get("confirm") != "yes":
        return render_template("chat/delete.html", conversation=conversation)
    admin.delete_conversations(
        get_redis(), {conversation.id: conversation.owner}, only_owner=conversation.owner
    )
    return redirect(url_for("chat.index"))


@bp.get("/c/<conversation_id>/runs/<run_id>/events")
def events(conversation_id: str, run_id: str):
    """Server-Sent Events: the run's chunks after Last-Event-ID (or ?after=), live, then
    an ``end`` event with the status."""
    conversation = _owned_conversation(conversation_id)
    after = request.headers.get("Last-Event-ID") or request.args.get("after", "0-0")
    if not EVENT_ID.match(after):
        abort(400)
    r, worker = get_blocking_redis(), _worker()

    def stream():
        yield "retry: 1000\n\n"
        for event in runs.follow(r, conversation.id, run_id, after, WATCH_BLOCK_MS):
            if worker.stopping.is_set():
                return  # shutting down: the browser reconnects from its last event
            if event is None:
                yield ": keep-alive\n\n"
            elif event.status:
                data = {"status": event.status, "error_kind": event.error_kind}
                yield f"id: {event.id}\nevent: end\ndata: {json.dumps(data)}\n\n"
                return
            else:
                yield f"id: {event.id}\ndata: {json.dumps({'text': event.text})}\n\n"
        yield f"event: end\ndata: {json.dumps({'status': 'gone'})}\n\n"

    return Response(
        stream(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _render_index(error: str | None = None, draft: str = ""):
    return render_template(
        "chat/index.html",
        conversations=conversations.list_conversations(get_redis(), current_owner()),
        new_message_id=conversations.new_id(),
        error=error,
        draft=draft,
    )


def _render_conversation(
    conversation: Conversation,
    error: str | None = None,
    draft: str = "",
    issued_code: resume_codes.IssuedCode | None = None,
):
    r = get_redis()
    before = request.args.get("before", type=int)
    # The run before the messages: a reply that ends in between is among the messages, and
    # shown as still being written (its watcher then hears of the end at once).
    run = runs.latest_run(r, conversation.id)
    first_index, messages = conversations.read_page(
        r, conversation, int(current_app.config["PAGE_SIZE"]), before
    )
    run_text, run_event_id = runs.run_text(r, run) if run and run.running else ("", "0-0")
    is_latest_page = before is None or before >= conversation.message_count
    session = lifecycle.read_session(r, conversation.id)
    if session is None and is_latest_page:
        metrics.count_resume_failure(r, "expired")  # back after the session ended
    copy = [{"role": m.role, "content": m.content} for m in messages if m.role != lifecycle.NOTE]
    return render_template(
        "chat/conversation.html",
        browser_copy=copy[-lifecycle.COPY_MAX_MESSAGES :],
        conversation=conversation,
        session=session,
        state=lifecycle.state_of(conversation, session),
        messages=messages,
        first_index=first_index,
        is_latest_page=is_latest_page,
        run=run,
        run_text=run_text,
        run_event_id=run_event_id,
        new_message_id=conversations.new_id(),
        error=error,
        draft=draft or conversations.read_draft(r, conversation.id),
        issued_code=issued_code,
    )
