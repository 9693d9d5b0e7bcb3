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
from flask_login import current_user

from webapp import config, conversations, metrics, rate_limits, resume_codes
from webapp.resume_codes import CodeRefused
from webapp.storage import get_redis
from webapp.views.identity import current_owner

bp = Blueprint("resume", __name__)

FAILED_ENTRY_LIMITS = (rate_limits.per_minute(10), rate_limits.per_day(100))
"""Failed code entries allowed per client address (S4); past them, a 429 page."""
FAILED_ENTRIES = "resume.redeem"
"""The scope of the failed entries' windows, in their keys."""
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
    r = get_redis()
    # Every entry takes a failure's slot before its code is looked at, so that entries sent
    # together cannot all pass a check made before any of them is counted (S4).
    slot = rate_limits.reserve_slot(r, FAILED_ENTRY_LIMITS, FAILED_ENTRIES, _client_address())
    if slot is None:
        abort(429)
    entry = request.form.get("code", "")
    try:
        digest = resume_codes.look_up(r, current_app.config["SECRET_KEY"], entry)
        response = _redeem(digest, resume_codes.owner_of(r, digest))
    except CodeRefused as refused:
        return _refused(refused.reason, entry)
    rate_limits.give_back_slot(r, slot)  # a right code is not a failure
    return response


def _client_address() -> str:
    """The client's address: ProxyFix has taken it from X-Forwarded-For behind
    TRUSTED_PROXIES. Without one (a Unix socket and no proxy), such clients share a limit."""
    return request.remote_addr or "unknown"


@bp.get("/resume/continue")
def after_login():
    """Where a code typed before logging in is redeemed, once logged in."""
    digest = session.pop(PENDING_CODE, None)
    if digest is None:
        return redirect(url_for("resume.enter"))
    try:
        return _redeem(digest, resume_codes.owner_of(get_redis(), digest))
    except CodeRefused as refused:
        return _refused(refused.reason, "")


def _redeem(digest: str, owner: str):
    """Redeem for this visitor, who must be the owning account for an account's code."""
    r = get_redis()
    if owner.startswith("user:"):
        if not current_user.is_authenticated:
            session[PENDING_CODE] = digest
            return redirect(url_for("auth.login", next=url_for("resume.after_login")))
        if current_user.owner != owner:
            raise CodeRefused(resume_codes.WRONG_ACCOUNT)
    conversation_id = resume_codes.redeem(r, digest, config.lifetimes(current_app.config))
    if owner != current_owner():
        # A guest's code is the guest's key: the conversation joins this browser (or account).
        conversations.give_conversation(
            r, conversation_id, owner, current_owner(), config.lifetimes(current_app.config)
        )
    metrics.count_resume_code_redeemed(r)
    return redirect(url_for("chat.conversation", conversation_id=conversation_id) + "#latest")


def _refused(reason: str, entry: str):
    metrics.count_resume_failure(get_redis(), reason)
    status = {resume_codes.MALFORMED: 400, resume_codes.WRONG_ACCOUNT: 403}.get(reason, 404)
    page = render_template(
        "resume/enter.html",
        error=REFUSALS[reason],
        entry=entry if reason == resume_codes.MALFORMED else "",
        format_hint=resume_codes.FORMAT_HINT,
    )
    return page, status
