"""Resume codes: bring a parked conversation back by typing its code at /resume."""

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from webapp import config, resume_codes
from webapp.resume_codes import CodeRefused, LoginNeeded
from webapp.storage import get_redis
from webapp.views.identity import client_address, current_owner

bp = Blueprint("resume", __name__)

PENDING_CODE = "pending_code"
"""Session field: the keyed hash of a code typed before logging in (never the code)."""

REFUSALS = {
    resume_codes.MALFORMED: "That isn't a resume code. A code is "
    + resume_codes.FORMAT_HINT
    + "; case, spaces and dashes don't matter.",
    resume_codes.UNKNOWN: "There is no conversation for that code. Check it for typos.",
    resume_codes.EXPIRED: "That code has expired. If you have an account, your conversation "
    "may still be in your list.",
    resume_codes.USED: "That code has already been used, or a newer code replaced it. "
    "Each code works once.",
    resume_codes.WRONG_ACCOUNT: "That code belongs to a conversation of another account.",
}


@bp.get("/resume")
def enter():
    return render_template("resume/enter.html", format_hint=resume_codes.FORMAT_HINT)


@bp.post("/resume")
def redeem():
    entry = request.form.get("code", "")
    try:
        conversation_id = resume_codes.redeem_entry(
            get_redis(),
            current_app.config["SECRET_KEY"],
            entry,
            current_owner(),
            client_address(),
            config.current().lifetimes,
        )
    except LoginNeeded as needed:
        return _log_in_first(needed.digest)
    except CodeRefused as refused:
        if refused.reason == resume_codes.RATE_LIMITED:
            abort(429)
        return _refused(refused.reason, entry)
    return _to_conversation(conversation_id)


@bp.get("/resume/continue")
def after_login():
    """Where a code typed before logging in is redeemed, once logged in."""
    digest = session.pop(PENDING_CODE, None)
    if digest is None:
        return redirect(url_for("resume.enter"))
    try:
        conversation_id = resume_codes.redeem_for(
            get_redis(), digest, current_owner(), config.current().lifetimes
        )
    except LoginNeeded as needed:
        return _log_in_first(needed.digest)
    except CodeRefused as refused:
        return _refused(refused.reason, "")
    return _to_conversation(conversation_id)


def _log_in_first(digest: str):
    session[PENDING_CODE] = digest
    return redirect(url_for("auth.login", next=url_for("resume.after_login")))


def _to_conversation(conversation_id: str):
    return redirect(url_for("chat.conversation", conversation_id=conversation_id) + "#latest")


def _refused(reason: str, entry: str):
    status = {resume_codes.MALFORMED: 400, resume_codes.WRONG_ACCOUNT: 403}.get(reason, 404)
    page = render_template(
        "resume/enter.html",
        error=REFUSALS[reason],
        entry=entry if reason == resume_codes.MALFORMED else "",
        format_hint=resume_codes.FORMAT_HINT,
    )
    return page, status
