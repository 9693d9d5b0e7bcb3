"""Friendly pages for every error a user can meet."""

import logging

import redis
from flask import Blueprint, render_template, request, url_for
from flask_wtf.csrf import CSRFError

bp = Blueprint("errors", __name__)
log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def _page(status: int, title: str, text: str):
    return render_template("errors/error.html", title=title, text=text), status


@bp.app_errorhandler(404)
def not_found(_error):
    if "conversation_id" in (request.view_args or {}):
        return _page(
            404,
            "I couldn't find that conversation",
            "It may have expired, been cleared, or belong to another browser.",
        )
    return _page(
        404, "I couldn't find that page", "Check the address, or start from the home page."
    )


@bp.app_errorhandler(CSRFError)
def csrf_failed(_error):
    return _page(
        400,
        "That form had expired",
        "Nothing was saved. Go back, reload the page and send it again.",
    )


@bp.app_errorhandler(413)
def too_large(_error):
    # The body is refused unread; the text is kept in the browser, which puts it back in
    # the message box of the page it was sent from.
    conversation_id = (request.view_args or {}).get("conversation_id")
    back = url_for("chat.conversation", conversation_id=conversation_id) if conversation_id else "/"
    page = render_template(
        "errors/error.html",
        title="That was too much to send at once",
        text="Nothing was saved, and what you typed is still in this browser. Go back, "
        "shorten it and send it again.",
        back=back,
    )
    return page, 413


@bp.app_errorhandler(429)
def too_many(_error):
    body, status = _page(
        429,
        "Slow down",
        "Too many tries from here in a short time. Wait a minute and try again; "
        "nothing you typed before was lost.",
    )
    return body, status, {"Retry-After": "60"}


@bp.app_errorhandler(redis.exceptions.ConnectionError)
@bp.app_errorhandler(redis.exceptions.TimeoutError)
def storage_unavailable(error):
    log.warning("Redis unavailable: %s", error)
    body, status = _page(
        503,
        "We'll be right back",
        "Conversations are stored safely, but we can't reach them for a moment. "
        "Try again in a few seconds.",
    )
    return body, status, {"Retry-After": str(RETRY_AFTER_SECONDS)}
