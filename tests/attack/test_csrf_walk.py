"""S6, the whole walk: every route that accepts a state-changing method, found in the app's
URL map (so a new route is covered without editing this file), is sent without a CSRF
token, with real ids in its URL and a form that would otherwise do something, by a
logged-in admin and by the owner of the conversations. Each answer is the app's 400 page,
and Redis is unchanged, key by key and value by value.

No counter is ignored in the comparison: a refused form bumps none (the CSRF check runs
before any view, and the pages fetched to set up are all fetched before the snapshot).
"""

import json
import re
import time
from html import unescape

import pytest

from tests.fake_anthropic import Hang, StreamError
from webapp import accounts, runs, shares
from webapp.storage import keys

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
FORM_EXPIRED = "That form had expired"
WAIT_SECONDS = 10


def csrf(client, path):
    return CSRF_FIELD.search(client.get(path).text)[1]


def logged_in(app, username: str):
    client = app.test_client()
    response = client.post(
        "/login",
        data={"csrf_token": csrf(client, "/login"), "username": username, "password": PASSWORD},
    )
    assert response.status_code == 302, response.text
    return client


def start(client, text: str) -> str:
    """Start a conversation as its owner would; its id (the reply may still be written)."""
    html = client.get("/").text
    message_id = re.search(r'name="message_id" value="([^"]+)"', html)[1]
    response = client.post(
        "/", data={"csrf_token": CSRF_FIELD.search(html)[1], "message_id": message_id, "text": text}
    )
    assert response.status_code == 302, response.text
    return response.location.split("#")[0].rsplit("/", 1)[-1]


def wait_for_run(r, conversation_id: str, ended: bool, chunks: int = 0):
    """The conversation's latest run, once it has ended (or has ``chunks`` chunks)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        run = runs.latest_run(r, conversation_id)
        if run is not None and (
            not run.running
            if ended
            else len(runs.read_events(r, conversation_id, run.id, "0-0", block_ms=1)) >= chunks
        ):
            return run
        assert time.monotonic() < deadline, f"the run of {conversation_id} is not there yet"
        time.sleep(0.02)


def snapshot(r) -> dict:
    """Every key: its type, its whole value, and whether it expires."""
    everything = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == "string":
            value = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(r.smembers(key))
        elif kind == "zset":
            value = r.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = r.xrange(key)
        else:
            raise AssertionError(f"{key} has a type the snapshot does not read: {kind}")
        everything[key] = (kind, value, r.ttl(key) == -1)
    return everything


def changes(before: dict, after: dict) -> dict:
    """Keys added, removed or changed, with their values before and after."""
    return {
        key: (before.get(key), after.get(key))
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
    }


def state_changing_rules(app):
    return sorted(
        (rule for rule in app.url_map.iter_rules() if rule.methods & STATE_CHANGING),
        key=lambda rule: rule.rule,
    )


@pytest.fixture
def quiet_app(make_app, fake_anthropic, real_redis):
    """The app on the fake model, where nothing changes Redis by itself during a test (no
    session ends; the only heartbeat, reap and sweep are the start-up ones). Afterwards, a
    reply still held by the model is let go and ends before the app is shut down."""
    yield make_app(
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=fake_anthropic.url,
        ANTHROPIC_MAX_RETRIES=0,
        SESSION_IDLE_SECONDS=3600,
        RUN_HEARTBEAT_SECONDS=3600,
        RUN_STALE_SECONDS=7200,
    )
    fake_anthropic.release()
    deadline = time.monotonic() + WAIT_SECONDS
    while real_redis.zcard(keys.RUNS_RUNNING):
        assert time.monotonic() < deadline, "a reply was still being written after the test"
        time.sleep(0.02)


def test_every_state_changing_request_without_a_csrf_token_gets_400_and_changes_nothing(
    quiet_app, fake_anthropic, real_redis
):
    admin_user = accounts.register(real_redis, "root", PASSWORD)
    accounts.make_admin(real_redis, admin_user)
    owner_user = accounts.register(real_redis, "ada", PASSWORD)
    admin, owner = logged_in(quiet_app, "root"), logged_in(quiet_app, "ada")

    # The owner's conversations, one in each state an action may act on.
    parked = start(owner, "A finished reply, then parked")
    wait_for_run(real_redis, parked, ended=True)
    park = owner.post(
        f"/c/{parked}/park",
        data={"csrf_token": csrf(owner, f"/c/{parked}")},
        headers={"Accept": "application/json"},
    )
    code = park.json["code"]
    fake_anthropic.enqueue(StreamError(after=2))
    broken = start(owner, "A reply that broke off part-way")
    assert wait_for_run(real_redis, broken, ended=True).status == runs.FAILED
    expired = start(owner, "A session that has ended")
    wait_for_run(real_redis, expired, ended=True)
    real_redis.delete(keys.conversation_session(expired))
    fake_anthropic.enqueue(Hang(after=1))
    running = start(owner, "A reply being written")
    assert wait_for_run(real_redis, running, ended=False, chunks=1).running
    conversation_ids = [parked, broken, expired, running]
    run_of = {cid: runs.latest_run(real_redis, cid).id for cid in conversation_ids}
    share = shares.create(real_redis, owner_user.owner, parked, lifetime=3600, most=10)
    # Real values for the URL variables: a route with another variable fails the test below.
    url_values = {
        "conversation_id": conversation_ids,
        "run_id": None,  # each conversation's own latest run
        "token": share,  # a live share link of the owner's
    }
    # What a form to any of them might carry: each field something that would act.
    form = {
        "confirm": "yes",
        "text": "Do it",
        "message_id": "m" * 22,
        "through": "0",
        "code": code,
        "copy": json.dumps([{"role": "user", "content": "Hello"}]),
        "owner": owner_user.owner,
        "username": "ada",
        "password": PASSWORD,
        "remember": "1",
        "next": "/",
        "token": share,
    }

    def targets(rule) -> list[str]:
        unknown = rule.arguments - url_values.keys()
        assert not unknown, f"{rule.rule}: give the walk real values for {sorted(unknown)}"
        path = rule.rule.replace("<token>", share)
        if "conversation_id" not in rule.arguments:
            return [path]
        return [
            path.replace("<conversation_id>", cid).replace("<run_id>", run_of[cid])
            for cid in url_values["conversation_id"]
        ]

    rules = state_changing_rules(quiet_app)
    before = snapshot(real_redis)
    for rule in rules:
        for path in targets(rule):
            for who, client in (("admin", admin), ("owner", owner)):
                for method in sorted(rule.methods & STATE_CHANGING):
                    response = client.open(path, method=method, data=form)
                    said = f"{method} {path} as the {who}: {response.status_code}"
                    assert response.status_code == 400, said
                    assert response.content_type.startswith("text/html"), said
                    assert FORM_EXPIRED in unescape(response.text), said
    assert changes(before, snapshot(real_redis)) == {}

    # The walk reached every kind of action (so it did walk the map), and both are still
    # logged in: the logout and sign-out forms without a token did nothing either.
    walked = {rule.endpoint for rule in rules}
    assert {"chat.stop", "chat.send", "resume.redeem", "auth.logout"} <= walked
    assert {"admin.clear_conversation", "auth.sign_out_everywhere"} <= walked
    assert {"shares.share", "shares.revoke", "shares.continue_in_own_chat"} <= walked
    assert {"admin.revoke_share"} <= walked
    assert '<span class="who">root</span>' in admin.get("/").text
    assert '<span class="who">ada</span>' in owner.get("/").text
    assert runs.latest_run(real_redis, running).running

    # The comparison can fail: the same kind of request with its token changes Redis.
    with_token = owner.post(
        f"/c/{parked}/draft", data={"csrf_token": csrf(owner, f"/c/{parked}"), "text": "Hm"}
    )
    assert with_token.status_code == 204
    assert keys.conversation_draft(parked) in changes(before, snapshot(real_redis))
