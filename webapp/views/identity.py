"""Who is asking: an account holder (Flask-Login, checked against Redis on every request)
or a guest, identified by a random id kept in the signed session cookie."""

import secrets
from datetime import UTC, datetime, timedelta

from flask import Flask, Request, abort, current_app, redirect, request, session, url_for
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from itsdangerous import BadSignature

from webapp import accounts, owners
from webapp.accounts import User
from webapp.storage import get_redis

REMEMBER_SECONDS = 30 * 86400
"""Remember-me lasts at most 30 days (Flask-Login's default is a year)."""

KEPT_ACROSS_LOGIN = ("guest_id", "pending_code")
"""What a new login keeps of the session before it: this browser's guest id (to offer
moving its conversations) and a resume code typed before logging in (its keyed hash)."""

COOKIE_REFRESH_SECONDS = 86400
"""A permanent session's cookie is signed and sent again, its 30 days slid, once it is
this old, or whenever the session changes: not on every request."""

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Log in to see that page."


class LoginUser(UserMixin):
    """The logged-in user, with the token of this login."""

    def __init__(self, user: User, token: str) -> None:
        self.user, self.token = user, token
        self.username, self.is_admin, self.owner = user.username, user.is_admin, user.owner

    def get_id(self) -> str:
        return f"{self.user.id}:{self.token}"


@login_manager.user_loader
def _load_login(login_id: str) -> LoginUser | None:
    user_id, _, token = login_id.partition(":")
    user = accounts.user_of_login(get_redis(), user_id, token)
    return LoginUser(user, token) if user else None


class SignedAt(SecureCookieSession):
    """A session read from its cookie, with when that cookie was signed."""

    signed_at: datetime | None = None


class SlidingCookieSessions(SecureCookieSessionInterface):
    """Flask's signed cookie sessions, whose permanent cookie (a guest's id, a remembered
    login) is sent again at most once every COOKIE_REFRESH_SECONDS while the session is
    unchanged. Flask re-signs and sends it on every request (SESSION_REFRESH_EACH_REQUEST),
    about a twentieth of a page's or a redemption's CPU."""

    session_class = SignedAt

    def open_session(self, app: Flask, request: Request) -> SignedAt | None:
        # Flask's own, keeping the cookie's signing time.
        signer = self.get_signing_serializer(app)
        if signer is None:
            return None
        cookie = request.cookies.get(self.get_cookie_name(app))
        if not cookie:
            return self.session_class()
        max_age = int(app.permanent_session_lifetime.total_seconds())
        try:
            data, signed_at = signer.loads(cookie, max_age=max_age, return_timestamp=True)
        except BadSignature:
            return self.session_class()
        opened = self.session_class(data)
        opened.signed_at = signed_at
        return opened

    def should_set_cookie(self, app: Flask, session: SignedAt) -> bool:
        if session.modified:
            return True
        if not session.permanent:
            return False
        age = datetime.now(UTC) - session.signed_at if session.signed_at else None
        return age is None or age.total_seconds() >= COOKIE_REFRESH_SECONDS


def init_app(app: Flask) -> None:
    app.session_interface = SlidingCookieSessions()
    app.config.update(
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=REMEMBER_SECONDS),
        REMEMBER_COOKIE_DURATION=timedelta(seconds=REMEMBER_SECONDS),
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
    )
    login_manager.init_app(app)


def client_address() -> str:
    """The client's address, for the limits kept per address: ProxyFix has taken it from
    X-Forwarded-For behind TRUSTED_PROXIES. Without one (a Unix socket and no proxy), such
    clients share their limits."""
    return request.remote_addr or "unknown"


def guest_owner() -> str | None:
    """This browser's guest identity, if it has one."""
    return owners.of_guest(session["guest_id"]) if "guest_id" in session else None


def current_owner() -> str:
    """The owner string of the conversations this visitor may see: their account's, or this
    browser's (made on first use). Sends visitors to log in when guests are not allowed."""
    if current_user.is_authenticated:
        return current_user.owner
    if not current_app.config["ALLOW_GUESTS"]:
        abort(redirect(url_for("auth.login", next=request.full_path)))
    if "guest_id" not in session:
        session["guest_id"] = secrets.token_urlsafe(16)
        session.permanent = True
    return owners.of_guest(session["guest_id"])


def login_ran_out() -> bool:
    """This browser was logged in, and its login ended without it logging out (it ran
    out, or it was signed out everywhere)."""
    return not current_user.is_authenticated and "_user_id" in session


def log_in(user: User, remember: bool) -> None:
    """Start a new login: a fresh session (keeping only KEPT_ACROSS_LOGIN) and a new token
    checked on each request."""
    kept = {name: session[name] for name in KEPT_ACROSS_LOGIN if name in session}
    session.clear()
    lifetime = REMEMBER_SECONDS if remember else int(current_app.config["LOGIN_SECONDS"])
    token = accounts.start_login(get_redis(), user, lifetime)
    login_user(LoginUser(user, token), remember=remember)
    session.permanent = remember
    session.update(kept)


def log_out() -> None:
    """End this login for good: its token is removed, so a replayed cookie is refused."""
    if current_user.is_authenticated:
        accounts.end_login(get_redis(), current_user.user.id, current_user.token)
    logout_user()
