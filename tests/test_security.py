"""Security over HTTP: the headers every response carries, Secure cookies over HTTPS, the
session cookie re-signed only when it changed or once a day, trusted proxies, and CSRF
refusal."""

from datetime import UTC, datetime, timedelta

import pytest
from flask import request

from tests.conftest import CSRF_FIELD, stored_keys
from webapp import accounts
from webapp.views import identity

POLICY_DIRECTIVES = {
    "default-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}

PASSWORD = "correct horse battery"
HTTPS = "https://localhost"


def directives(policy: str) -> dict:
    """A Content-Security-Policy as {directive: its sources}."""
    parts = (part.split(None, 1) for part in policy.split(";") if part.strip())
    return {part[0]: part[1] if len(part) > 1 else "" for part in parts}


def set_cookies(response) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def with_probe(app):
    """Give ``app`` a page that shows the address the request came from, as the app sees it."""
    app.add_url_rule("/_probe/remote-addr", "probe", lambda: request.remote_addr or "")
    return app


def post_form(client, path, form_page=None, **fields):
    """Post a form over HTTPS as a browser would: with the token of the page it is on, and
    that page as the Referer (over HTTPS the CSRF check also demands a same-site Referer)."""
    page = f"{HTTPS}{form_page or path}"
    token = CSRF_FIELD.search(client.get(page).text)[1]
    return client.post(
        f"{HTTPS}{path}", headers={"Referer": page}, data={"csrf_token": token, **fields}
    )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/healthz", 200),
        ("GET", "/static/app.css", 200),
        ("GET", "/c/no-such-conversation", 404),
        ("POST", "/", 400),  # refused by CSRF protection, before any view
    ],
)
def test_every_response_carries_the_security_headers(client, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status
    policy = directives(response.headers["Content-Security-Policy"])
    # Each directive exactly: a source added to one (say 'unsafe-inline') must fail here.
    for directive, sources in POLICY_DIRECTIVES.items():
        assert policy.get(directive) == sources, directive
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_a_guests_cookie_is_secure_over_https(client):
    response = client.get("/", base_url=HTTPS)
    cookies = set_cookies(response)
    assert cookies, "a guest's first visit should set the session cookie"
    assert all("; Secure" in cookie for cookie in cookies)


def test_every_cookie_of_a_login_is_secure_over_https(client):
    """Logging in with remember-me sets two cookies (session and remember): both Secure."""
    assert post_form(client, "/register", username="ada", password=PASSWORD).status_code == 302
    post_form(client, "/logout", form_page="/")
    response = post_form(client, "/login", username="ada", password=PASSWORD, remember="1")
    assert response.status_code == 302
    cookies = set_cookies(response)
    assert {cookie.split("=", 1)[0] for cookie in cookies} >= {"session", "remember_token"}
    assert all("; Secure" in cookie for cookie in cookies)


def test_a_cookie_already_secure_is_not_marked_twice(make_app):
    client = make_app(SESSION_COOKIE_SECURE=True).test_client()
    (cookie,) = set_cookies(client.get("/", base_url=HTTPS))
    assert cookie.count("Secure") == 1


def test_cookies_over_plain_http_are_left_alone(client):
    cookies = set_cookies(client.get("/", base_url="http://localhost"))
    assert cookies
    assert not any("Secure" in cookie for cookie in cookies)


def test_the_scheme_can_come_from_the_wsgi_environment(client):
    """What the middleware reads is the request's scheme, however the server set it."""
    response = client.get("/", environ_overrides={"wsgi.url_scheme": "https"})
    assert set_cookies(response)
    assert all("; Secure" in cookie for cookie in set_cookies(response))


# Each proxy appends what it saw to the headers; the app trusts only the last
# TRUSTED_PROXIES entries, and what comes before them is the client's own claim.
@pytest.mark.parametrize(
    ("proxies", "forwarded_proto"), [(1, "https"), (2, "https, http")], ids=["one", "two"]
)
def test_behind_trusted_proxies_their_forwarded_proto_makes_cookies_secure(
    make_app, proxies, forwarded_proto
):
    client = make_app(TRUSTED_PROXIES=proxies).test_client()
    response = client.get("/", headers={"X-Forwarded-Proto": forwarded_proto})
    assert set_cookies(response)
    assert all("; Secure" in cookie for cookie in set_cookies(response))


@pytest.mark.parametrize(
    ("proxies", "forwarded_for"),
    [(1, "192.0.2.66, 203.0.113.7"), (2, "192.0.2.66, 203.0.113.7, 10.0.0.2")],
    ids=["one", "two"],
)
def test_behind_trusted_proxies_their_forwarded_for_is_the_clients_address(
    make_app, proxies, forwarded_for
):
    client = with_probe(make_app(TRUSTED_PROXIES=proxies)).test_client()
    headers = {"X-Forwarded-For": forwarded_for}
    assert client.get("/_probe/remote-addr", headers=headers).text == "203.0.113.7"


def test_without_trusted_proxies_forwarded_headers_change_nothing(make_app):
    client = with_probe(make_app()).test_client()
    forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    assert client.get("/_probe/remote-addr", headers=forwarded).text == "127.0.0.1"
    cookies = set_cookies(client.get("/", headers=forwarded))
    assert cookies
    assert not any("Secure" in cookie for cookie in cookies)


def test_a_post_without_its_csrf_token_is_refused_and_changes_nothing(client, real_redis):
    token = CSRF_FIELD.search(client.get("/register").text)[1]
    before = stored_keys(real_redis)
    account = {"username": "ada", "password": PASSWORD}
    response = client.post("/register", data=account)
    assert response.status_code == 400
    assert "Nothing was saved" in response.text
    assert accounts.find_user(real_redis, "ada") is None
    assert stored_keys(real_redis) == before
    # The same form with its token is accepted, so the refusal above was the token's doing.
    assert client.post("/register", data={"csrf_token": token, **account}).status_code == 302
    assert accounts.find_user(real_redis, "ada") is not None


def test_pages_are_never_stored_but_static_files_may_be(chat):
    conversation_id = chat.start_conversation("My bank PIN is 4321")
    for path in ("/", f"/c/{conversation_id}", "/resume", "/login", "/no-such-page"):
        assert chat.client.get(path).headers["Cache-Control"] == "no-store", path
    assert chat.client.get("/static/app.css").headers.get("Cache-Control") != "no-store"


def session_cookie(response) -> str | None:
    """The session cookie a response sets, if it sets one."""
    found = [c for c in set_cookies(response) if c.startswith("session=")]
    return found[0].split(";", 1)[0].split("=", 1)[1] if found else None


def test_a_guests_cookie_is_sent_again_only_once_a_day_while_unchanged(client, monkeypatch):
    assert session_cookie(client.get("/")), "the first visit makes the guest's id"
    first = session_cookie(client.get("/"))  # the login manager marks it once (_fresh)
    assert first
    assert session_cookie(client.get("/")) is None  # unchanged and fresh: not re-signed
    assert session_cookie(client.get("/resume")) is None
    signed = datetime.now(UTC)
    a_day_on = signed + timedelta(seconds=identity.COOKIE_REFRESH_SECONDS + 1)
    monkeypatch.setattr(identity, "datetime", FrozenAt(a_day_on))
    again = session_cookie(client.get("/"))
    assert again  # sent again, its lifetime slid from now...
    serializer = client.application.session_interface.get_signing_serializer(client.application)
    assert serializer.loads(again) == serializer.loads(first)  # ...with the same guest id


def test_a_changed_session_is_always_sent(client):
    client.get("/")
    with client.session_transaction() as session:
        session["pending_code"] = "digest"
    response = client.get("/resume/continue")  # pops it (an unknown code): it changed
    assert response.status_code == 404 and session_cookie(response)


def test_a_session_cookie_of_another_key_is_a_new_session(client, make_app):
    other = make_app(SECRET_KEY="another-secret").test_client()
    other.get("/")
    forged = other.get_cookie("session").value
    client.set_cookie("session", forged)
    fresh = session_cookie(client.get("/"))
    assert fresh and fresh != forged  # refused: a new guest, a new cookie


class FrozenAt:
    """``datetime`` with ``now`` at one moment."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self, tz=None):
        return self.moment
