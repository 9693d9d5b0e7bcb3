"""Accounts: register, log in, log out, sign out everywhere, and move this browser's
conversations into the account."""

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from webapp import accounts, config, conversations, rate_limits
from webapp.accounts import AccountRejected, LoginRefused, TooManyRegistrations
from webapp.security import same_site_path
from webapp.storage import get_redis
from webapp.views.identity import client_address, guest_owner, log_in, log_out

bp = Blueprint("auth", __name__)


def _next_url() -> str:
    """Where to go after logging in: a path on this site, never another site."""
    return same_site_path(request.values.get("next", ""))


def _after_login():
    """Offer to move this browser's conversations into the account, then go on."""
    guest = guest_owner()
    if guest and conversations.list_conversations(get_redis(), guest, limit=1):
        return redirect(url_for("auth.move", next=_next_url()))
    return redirect(_next_url())


@bp.route("/register", methods=["GET", "POST"])
def register():
    if not current_app.config["ALLOW_REGISTRATION"]:
        return render_template("auth/closed.html"), 403
    if request.method == "GET":
        return render_template("auth/register.html", next=_next_url())
    username = request.form.get("username", "").strip()
    try:
        user = accounts.register(
            get_redis(),
            username,
            request.form.get("password", ""),
            client_address(),
            config.current().registration_limits,
        )
    except AccountRejected as error:
        page = render_template(
            "auth/register.html", error=str(error), username=username, next=_next_url()
        )
        return page, 400
    except TooManyRegistrations:
        error = "Too many accounts were made from here in the last hour. Try again later."
        page = render_template(
            "auth/register.html", error=error, username=username, next=_next_url()
        )
        return page, 429, {"Retry-After": str(rate_limits.HOUR)}
    log_in(user, remember=False)
    return _after_login()


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("auth/login.html", next=_next_url())
    username = request.form.get("username", "").strip()
    try:
        user = accounts.authenticate(
            get_redis(),
            username,
            request.form.get("password", ""),
            client_address(),
            config.current().login_failure_limits,
        )
    except LoginRefused as refused:
        if refused.from_address:
            error = f"Too many failed logins from here. Try again in {refused.retry_after} seconds."
            status = 429
        elif refused.retry_after:
            error = (
                "Too many failed attempts for this username. "
                f"Try again in {refused.retry_after} seconds."
            )
            status = 429
        else:
            error, status = "That username and password don't match.", 401
        page = render_template("auth/login.html", error=error, username=username, next=_next_url())
        return page, status, ({"Retry-After": str(refused.retry_after)} if status == 429 else {})
    log_in(user, remember=bool(request.form.get("remember")))
    return _after_login()


FORGET_THIS_BROWSERS_COPIES = {"Clear-Site-Data": '"storage"'}
"""On logging out, the browser drops every copy and draft it kept (localStorage): the next
person at this browser finds none of them."""


@bp.post("/logout")
def logout():
    log_out()
    return redirect(url_for("chat.index")), FORGET_THIS_BROWSERS_COPIES


@bp.post("/account/sign-out-everywhere")
@login_required
def sign_out_everywhere():
    accounts.sign_out_everywhere(get_redis(), current_user.user.id)
    log_out()
    return redirect(url_for("auth.login")), FORGET_THIS_BROWSERS_COPIES


@bp.route("/account/move", methods=["GET", "POST"])
@login_required
def move():
    guest = guest_owner()
    if guest is None:
        abort(404)
    if request.method == "POST":
        conversations.move_conversations(get_redis(), guest, current_user.owner)
        return redirect(_next_url())
    waiting = conversations.list_conversations(get_redis(), guest)
    return render_template("auth/move.html", conversations=waiting, next=_next_url())
