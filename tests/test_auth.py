"""Accounts over HTTP: registration, login, logout, throttling, cookies, ownership."""

import re
import subprocess
import sys
import threading
from html import unescape
from pathlib import Path

import pytest

from tests.fake_anthropic import Hang
from webapp import accounts, conversations, rate_limits
from webapp.storage import keys

PASSWORD = "correct horse battery"
NO_ADDRESS_LIMIT = (rate_limits.per_minute(1000),)
"""Failed logins allowed per address in tests of the limit per username."""


def csrf(client, path="/login"):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)[1]


def register(client, username="ada", password=PASSWORD):
    return client.post(
        "/register",
        data={"csrf_token": csrf(client, "/register"), "username": username, "password": password},
    )


def log_in(client, username="ada", password=PASSWORD, remember=False, next_url=""):
    data = {"csrf_token": csrf(client), "username": username, "password": password}
    if remember:
        data["remember"] = "1"
    if next_url:
        data["next"] = next_url
    return client.post("/login", data=data)


def log_out(client):
    return client.post("/logout", data={"csrf_token": csrf(client, "/")})


def logged_in_as(client):
    found = re.search(r'<span class="who">([^<]+)</span>', client.get("/").text)
    return found[1] if found else None


def test_register_logs_in_and_stores_only_an_argon2_hash(client, real_redis):
    assert register(client).status_code == 302
    assert logged_in_as(client) == "ada"
    user = accounts.find_user(real_redis, "ADA")
    stored = real_redis.hget(keys.user_profile(user.id), "password_hash")
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in str(real_redis.hgetall(keys.user_profile(user.id)))


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("ab", PASSWORD, "3 to 32 letters"),
        ("no spaces", PASSWORD, "3 to 32 letters"),
        ("ada", "short", "8 to 256 characters"),
        ("ada", " " * 8, "8 to 256 characters"),  # only white space
        ("ada", "\t \n" * 4, "8 to 256 characters"),
        ("ada", "12345678", "one of the most common"),
        ("ada", "password", "one of the most common"),
        ("ada", "Password", "one of the most common"),  # case makes it no less common
        ("ada", "qwertyuiop", "one of the most common"),
    ],
)
def test_bad_registrations_are_refused_with_a_reason(
    client, real_redis, username, password, reason
):
    response = register(client, username, password)
    assert response.status_code == 400
    assert reason in response.text
    assert not real_redis.exists(keys.USERNAMES)


def test_a_taken_username_is_refused_whatever_its_case(client, app):
    register(client, "ada")
    response = register(app.test_client(), "ADA")
    assert response.status_code == 400
    assert "That username is taken." in response.text


def test_wrong_password_and_unknown_user_get_the_same_answer(client, app):
    register(app.test_client(), "ada")
    wrong = log_in(client, "ada", "wrong password")
    unknown = log_in(client, "nobody", "wrong password")
    assert wrong.status_code == unknown.status_code == 401
    message = "That username and password don't match."
    assert message in unescape(wrong.text) and message in unescape(unknown.text)


def test_logout_makes_a_replayed_cookie_useless(app, client):
    register(client)
    stolen = client.get_cookie("session").value
    log_out(client)
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert logged_in_as(replay) is None


def test_sign_out_everywhere_ends_every_login(app, client):
    register(client)
    laptop, phone = app.test_client(), app.test_client()
    log_in(laptop)
    log_in(phone, remember=True)
    assert logged_in_as(phone) == "ada"
    phone_cookies = {c.key: c.value for c in phone._cookies.values()}
    laptop.post("/account/sign-out-everywhere", data={"csrf_token": csrf(laptop, "/")})
    assert logged_in_as(laptop) is None
    assert logged_in_as(phone) is None
    replay = app.test_client()
    for name, value in phone_cookies.items():
        replay.set_cookie(name, value)
    assert logged_in_as(replay) is None  # the remember-me cookie too


def test_login_rotates_the_session(app, client):
    register(app.test_client())
    client.get("/")  # a guest session
    before = client.get_cookie("session").value
    log_in(client)
    after = client.get_cookie("session").value
    assert before != after
    replay = app.test_client()
    replay.set_cookie("session", before)
    assert logged_in_as(replay) is None


def test_remember_me_lasts_thirty_days_and_cookies_are_httponly_lax(app, client):
    register(app.test_client())
    response = log_in(client, remember=True)
    cookies = response.headers.getlist("Set-Cookie")
    remember = next(c for c in cookies if c.startswith("remember_token="))
    assert "Max-Age=2592000" in remember or re.search(r"Expires=", remember)
    for cookie in cookies:
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
    remember_cookie = client.get_cookie("remember_token")
    assert remember_cookie.max_age is None or remember_cookie.max_age <= 30 * 86400


def test_cookies_are_secure_over_https(app):
    client = app.test_client()
    response = client.get("/", base_url="https://chat.example")
    assert all("; Secure" in c for c in response.headers.getlist("Set-Cookie"))
    plain = app.test_client().get("/")
    assert all("; Secure" not in c for c in plain.headers.getlist("Set-Cookie"))


def test_ten_failures_then_a_growing_wait_and_a_success_resets(app, client, real_redis):
    register(app.test_client())
    for _ in range(9):
        assert log_in(client, password="wrong password").status_code == 401
    assert log_in(client).status_code == 302  # a success resets the count
    log_out(client)
    for _ in range(10):
        assert log_in(client, password="wrong password").status_code == 401
    locked = log_in(client)  # even the right password waits now
    assert locked.status_code == 429
    assert "Try again in" in locked.text
    assert locked.headers["Retry-After"] == "1"
    real_redis.hset(keys.login_failures("ada", "127.0.0.1"), "until", 0)  # the wait is over
    assert log_in(client, password="wrong again").status_code == 401
    assert real_redis.hget(keys.login_failures("ada", "127.0.0.1"), "count") == "11"
    assert log_in(client).headers["Retry-After"] == "2"  # the delay doubled


def test_unknown_usernames_are_throttled_the_same_way(client):
    for _ in range(10):
        log_in(client, "ghost", "guess")
    response = log_in(client, "ghost", "guess")
    assert response.status_code == 429
    assert "Too many failed attempts for this username." in response.text


def test_a_guests_conversations_move_into_the_account_on_request(app, chat, client, real_redis):
    conversation_id = chat.start_conversation("Before I had an account")
    response = register(client)
    assert response.location.startswith("/account/move")
    page = client.get(response.location)
    assert "Before I had an account" in page.text
    client.post("/account/move", data={"csrf_token": csrf(client, "/account/move"), "next": "/"})
    user = accounts.find_user(real_redis, "ada")
    assert conversations.get_conversation(real_redis, conversation_id).owner == user.owner
    phone = app.test_client()
    log_in(phone)
    assert "Before I had an account" in phone.get("/").text
    assert phone.get(f"/c/{conversation_id}").status_code == 200


def test_moving_skips_conversations_that_expired_meanwhile(app, chat, client, real_redis):
    conversation_id = chat.start_conversation("Soon gone")
    real_redis.delete(*keys.conversation_keys(conversation_id))
    register(client)
    user = accounts.find_user(real_redis, "ada")
    with client.session_transaction() as session:
        guest = f"guest:{session['guest_id']}"
    assert conversations.move_conversations(real_redis, guest, user.owner) == 0
    assert not real_redis.exists(keys.conversation_meta(conversation_id))


def test_an_account_conversation_offers_a_stranger_to_log_in_then_opens(app, client, chat):
    """Logged out, the page is the one any unknown id gets (tests/attack/test_probing.py),
    with its offer to log in, which leads back."""
    register(client)
    conversation_id = chat.start_conversation("My own")
    log_out(client)
    response = client.get(f"/c/{conversation_id}")
    assert response.status_code == 404
    assert "My own" not in response.text
    assert f'href="/login?next=/c/{conversation_id}"' in response.text
    landed = log_in(client, next_url=f"/c/{conversation_id}")
    assert landed.location == f"/c/{conversation_id}"
    assert "My own" in client.get(landed.location).text


def test_next_never_leads_to_another_site(app, client):
    register(app.test_client())
    assert log_in(client, next_url="//evil.example/").location == "/"
    log_out(client)
    assert log_in(client, next_url="https://evil.example/").location == "/"


def conversation_routes(app):
    return [r for r in app.url_map.iter_rules() if "conversation_id" in r.arguments]


def test_no_conversation_route_serves_another_account_or_a_guest(app, client, chat, real_redis):
    register(client)
    conversation_id = chat.start_conversation("Only for ada")
    run_id = real_redis.hget(keys.conversation_run(conversation_id), "id")
    snapshot = {key: real_redis.dump(key) for key in real_redis.scan_iter(match="rc:conv:*")}
    intruder, guest = app.test_client(), app.test_client()
    register(intruder, "mallory")
    guest.get("/")
    routes = conversation_routes(app)
    assert len(routes) >= 6
    for rule in routes:
        values = {"conversation_id": conversation_id, "run_id": run_id, "token": "t" * 32}
        path = rule.build(values)[1]
        for who in (intruder, guest):
            method = "GET" if "GET" in rule.methods else "POST"
            token = csrf(who, "/")
            response = who.open(path, method=method, data={"csrf_token": token, "text": "hi"})
            assert response.status_code == 404, path
            assert "Only for ada" not in response.text
    assert {
        key: real_redis.dump(key) for key in real_redis.scan_iter(match="rc:conv:*")
    } == snapshot


def test_model_calls_are_limited_per_person_and_the_text_is_kept(make_app, chat_factory):
    chat = chat_factory(make_app(MODEL_CALLS_PER_MINUTE=2))
    conversation_id = chat.start_conversation("one")
    chat.send(conversation_id, "two")
    chat.wait_for_reply(conversation_id)
    response = chat.send(conversation_id, "three, too many")
    assert response.status_code == 429
    assert "You're asking faster than the assistant can answer." in unescape(response.text)
    assert "three, too many" in response.text
    other = chat_factory(chat.client.application)
    assert other.start("someone else may").status_code == 302


def test_sends_refused_while_a_reply_is_written_use_up_no_model_calls(
    make_claude_app, chat_factory, fake_anthropic
):
    chat = chat_factory(make_claude_app(MODEL_CALLS_PER_MINUTE=3))
    fake_anthropic.enqueue(Hang(after=1))
    conversation_id = chat.conversation_id_of(chat.start("one, answered slowly"))
    for n in range(5):
        refused = chat.send(conversation_id, f"too soon {n}")
        assert refused.status_code == 409, f"send {n}: {refused.status_code}"
        assert "A reply is still being written." in refused.text
    fake_anthropic.release()
    chat.wait_for_reply(conversation_id)
    for text in ("two", "three"):
        assert chat.send(conversation_id, text).status_code == 302, text
        chat.wait_for_reply(conversation_id)
    assert chat.send(conversation_id, "four, too many").status_code == 429
    assert len(fake_anthropic.message_requests) == 3


def test_a_repeated_message_uses_up_no_model_call(make_claude_app, chat_factory, fake_anthropic):
    chat = chat_factory(make_claude_app(MODEL_CALLS_PER_MINUTE=3))
    conversation_id = chat.start_conversation("one")
    for _ in range(4):  # the same message, sent again from a page not yet reloaded
        assert chat.send(conversation_id, "two", message_id="the-second-message").status_code == 302
        chat.wait_for_reply(conversation_id)
    assert chat.send(conversation_id, "three").status_code == 302
    chat.wait_for_reply(conversation_id)
    assert chat.send(conversation_id, "four, too many").status_code == 429
    assert len(fake_anthropic.message_requests) == 3


def test_closed_registration_and_no_guests(make_app):
    closed = make_app(ALLOW_REGISTRATION=False, ALLOW_GUESTS=False).test_client()
    assert closed.get("/register").status_code == 403
    assert "Registration is closed" in closed.get("/register").text
    landing = closed.get("/")
    assert landing.status_code == 302
    assert landing.location.startswith("/login")


def test_create_admin_reads_the_password_from_stdin(redis_server, real_redis, tmp_path):
    command = Path(sys.executable).with_name("resume-chat")
    result = subprocess.run(
        [command, "create-admin", "root"],
        input=f"{PASSWORD}\n",
        capture_output=True,
        text=True,
        env={
            "REDIS_URL": redis_server.url,
            "FLASK_SECRET_KEY": "x",
            "FLASK_INSTANCE_PATH": str(tmp_path),
            "PATH": "/usr/bin:/bin",
        },
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "root is an admin." in result.stdout
    user = accounts.authenticate(real_redis, "root", PASSWORD, "127.0.0.1", NO_ADDRESS_LIMIT)
    assert user.is_admin


def test_parallel_wrong_passwords_are_held_to_the_limit(app, real_redis):
    """Every try takes its place before argon2 runs, so 20 at once can't all pass a check
    made before any of them is counted."""
    register(app.test_client())
    barrier, outcomes = threading.Barrier(20), []

    def wrong_password():
        barrier.wait()
        try:
            accounts.authenticate(
                real_redis, "ada", "not the password", "127.0.0.1", NO_ADDRESS_LIMIT
            )
        except accounts.LoginRefused as refused:
            outcomes.append("waited" if refused.retry_after else "checked")

    threads = [threading.Thread(target=wrong_password) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 20
    assert outcomes.count("checked") == accounts.FREE_FAILURES
    assert real_redis.hget(keys.login_failures("ada", "127.0.0.1"), "count") == str(
        accounts.FREE_FAILURES
    )


def test_a_conversation_started_while_moving_stays_listed(app, real_redis, lifetimes):
    """Moving reads the guest's index, then changes owners: a conversation the guest starts
    in between (another tab) is never lost from both lists."""
    guest, account = "guest:mover", "user:mover"
    moved = conversations.create_conversation(real_redis, guest, lifetimes)
    started = []

    class StartsOneInBetween:
        def __getattr__(self, name):
            return getattr(real_redis, name)

        def zrange(self, *args, **kwargs):
            entries = real_redis.zrange(*args, **kwargs)
            started.append(conversations.create_conversation(real_redis, guest, lifetimes))
            return entries

    assert conversations.move_conversations(StartsOneInBetween(), guest, account) == 1
    (late,) = started
    assert [c.id for c in conversations.list_conversations(real_redis, account)] == [moved]
    assert [c.id for c in conversations.list_conversations(real_redis, guest)] == [late]


def test_an_attackers_failures_never_lock_the_owner_out(app, real_redis):
    """Twenty wrong passwords for "ada" from an attacker's address: the attacker waits, and
    Ada, from her own address, logs in at once with her password."""
    register(app.test_client())
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "198.51.100.66"
    statuses = [log_in(attacker, password=f"guess {n}").status_code for n in range(20)]
    assert statuses[: accounts.FREE_FAILURES] == [401] * accounts.FREE_FAILURES
    assert 429 in statuses
    owner = app.test_client()
    owner.environ_base["REMOTE_ADDR"] = "203.0.113.5"
    assert log_in(owner).status_code == 302


def test_the_limit_per_address_answers_before_any_password_is_checked(
    make_app, real_redis, monkeypatch
):
    """Many usernames from one address: past the limit per address, 429 at once, with no
    argon2 hash computed (each would cost the server tens of milliseconds)."""
    app = make_app(LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE=5)
    hashed = []

    class CountingHasher:
        def verify(self, *args):
            hashed.append(1)
            return real.verify(*args)

    real = accounts._hasher
    monkeypatch.setattr(accounts, "_hasher", CountingHasher())
    client = app.test_client()
    statuses = [log_in(client, f"user{n}", "some guess").status_code for n in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    assert len(hashed) == 5
    refused = log_in(client, "user9", "some guess")
    assert "Too many failed logins from here." in unescape(refused.text)
    assert refused.headers["Retry-After"] == "60"
    assert real_redis.exists(keys.USERNAMES) == 0  # nothing registered by trying


def test_fresh_cookies_do_not_reset_the_guests_limit_on_model_calls(make_app, chat_factory):
    """25 new chats from 25 new cookies on one address: past the address's limit, refused
    with the text kept, and no conversation made; another address chats on."""
    app = make_app(GUEST_MODEL_CALLS_PER_ADDRESS_PER_MINUTE=5)
    r = app.extensions["redis"]
    started = []
    for number in range(25):
        response = chat_factory(app).start(f"fresh cookie {number}")
        started.append(response.status_code)
        if response.status_code == 429:
            assert f"fresh cookie {number}" in response.text
    assert started == [302] * 5 + [429] * 20
    assert len(list(r.scan_iter(match=keys.CONVERSATION_META_PATTERN))) == 5
    elsewhere = chat_factory(app)
    elsewhere.client.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    assert elsewhere.start("from another address").status_code == 302


def test_an_account_is_held_to_its_own_limit_not_the_addresss(make_app, chat_factory):
    app = make_app(GUEST_MODEL_CALLS_PER_ADDRESS_PER_MINUTE=1)
    register(app.test_client(), "ada")
    guest = chat_factory(app)
    assert guest.start("a guest's one call").status_code == 302
    assert chat_factory(app).start("another guest, same address").status_code == 429
    account = chat_factory(app)
    log_in(account.client)
    assert account.start("an account on the same address").status_code == 302


def test_registrations_are_limited_per_address(make_app, real_redis):
    app = make_app(REGISTRATIONS_PER_ADDRESS_PER_HOUR=3)
    client = app.test_client()
    assert [register(client, f"user{n}").status_code for n in range(3)] == [302] * 3
    client = app.test_client()
    refused = register(client, "one_too_many")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "3600"
    assert "Too many accounts were made from here" in unescape(refused.text)
    assert 'value="one_too_many"' in refused.text
    assert accounts.find_user(real_redis, "one_too_many") is None
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "203.0.113.10"
    assert register(elsewhere, "from_elsewhere").status_code == 302
