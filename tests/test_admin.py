"""The admin console over HTTP: who may open it, what it lists, filters and pages, and each
action (confirmed first, audited, clearing exactly the right keys)."""

import re
import time
from html import unescape

import pytest

from tests import expiry
from tests.conftest import Chat, RoundTrips
from webapp import accounts, conversations, deadlines
from webapp.conversations import Lifetimes
from webapp.llm import USAGE_FIELDS
from webapp.storage import keys

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
ROW = re.compile(r'<tr id="conversation-([^"]+)".*?</tr>', re.S)
NEXT_PAGE = re.compile(r'<a rel="next" href="([^"]+)"')


def csrf(client, path="/login"):
    return CSRF_FIELD.search(client.get(path).text)[1]


def log_in(client, username, password=PASSWORD):
    response = client.post(
        "/login", data={"csrf_token": csrf(client), "username": username, "password": password}
    )
    assert response.status_code == 302, response.text
    return client


def make_user(real_redis, username, admin=False):
    user = accounts.register(real_redis, username, PASSWORD)
    if admin:
        accounts.make_admin(real_redis, user)
    return user


@pytest.fixture
def admin_client(app, real_redis):
    """A browser logged in as the admin "root"."""
    make_user(real_redis, "root", admin=True)
    return log_in(app.test_client(), "root")


def rows(html):
    """The console's conversation rows: id -> owner, state, messages, bytes, TTLs."""
    found = {}
    for match in ROW.finditer(html):
        row = match[0]
        session_ttl, transcript_ttl = re.findall(r'data-ttl="(-?\d*)"', row)
        found[match[1]] = {
            "owner": unescape(re.search(r'title="Only this owner[^"]*">([^<]+)</a>', row)[1]),
            "state": re.search(r'class="state state-(\w+)"', row)[1],
            "messages": int(re.search(r'<td class="num">(\d+)</td>', row)[1]),
            "bytes": int(re.search(r'data-bytes="(\d+)"', row)[1]),
            "tokens": int(re.search(r'data-tokens="(\d+)"', row)[1]),
            "session_ttl": int(session_ttl) if session_ttl else None,
            "transcript_ttl": int(transcript_ttl) if transcript_ttl else None,
        }
    return found


def act(client, path, confirm=False, **fields):
    """Post an admin action form as the console does (with confirm=yes, as the confirmation
    page does)."""
    data = {"csrf_token": csrf(client, "/"), **fields}
    if confirm:
        data["confirm"] = "yes"
    return client.post(path, data=data)


def keys_of(real_redis, conversation_id):
    return set(real_redis.scan_iter(match=keys.conversation_keys_pattern(conversation_id)))


def snapshot(real_redis, conversation_ids):
    """Every key of these conversations with its value, to prove nothing else changed."""
    return {
        key: real_redis.dump(key)
        for conversation_id in conversation_ids
        for key in keys_of(real_redis, conversation_id)
    }


def earlier_runs_events(real_redis, conversation_id):
    """The events streams of the conversation's runs before its latest one."""
    latest = real_redis.hget(keys.conversation_run(conversation_id), "id")
    return {
        key
        for key in keys_of(real_redis, conversation_id)
        if key.endswith(":events") and key != keys.run_events(conversation_id, latest)
    }


def end_session(real_redis, conversation_id):
    """Make a conversation expired: its session gone, its transcript kept."""
    assert real_redis.exists(keys.conversation_session(conversation_id))
    expiry.end_session(real_redis, conversation_id)


def audit_rows(html):
    audit = html.split('id="audit"', 1)[1]
    return [
        [
            unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)
        ]
        for tr in re.findall(r"<tr>(.*?)</tr>", audit, re.S)[1:]
    ]


# Who may open it


def test_a_stranger_is_sent_to_log_in(client):
    response = client.get("/admin")
    assert response.status_code == 302
    assert response.location == "/login?next=/admin"
    post = act(client, "/admin/expired/clear", confirm=True)
    assert post.status_code == 302
    assert post.location.startswith("/login?next=/admin/expired/clear")


def test_a_user_who_is_not_an_admin_gets_a_friendly_403(app, chat, real_redis):
    conversation_id = chat.start_conversation()
    make_user(real_redis, "ada")
    user = log_in(app.test_client(), "ada")
    page = user.get("/admin")
    assert page.status_code == 403
    assert "This page is for admins" in page.text
    assert "Resume Chat" in page.text  # the site's own page, not a bare error
    before = snapshot(real_redis, [conversation_id])
    token = csrf(user, "/")
    for path in ("/admin/expired/clear", "/admin/conversations/clear"):
        data = {"csrf_token": token, "confirm": "yes", "conversation_id": conversation_id}
        response = user.post(path, data=data)
        assert response.status_code == 403
    assert snapshot(real_redis, [conversation_id]) == before
    assert not real_redis.exists(keys.ADMIN_AUDIT)


def test_admin_pages_link_from_the_header_only_for_admins(admin_client, app, real_redis):
    assert 'href="/admin"' in admin_client.get("/").text
    make_user(real_redis, "ada")
    assert 'href="/admin"' not in log_in(app.test_client(), "ada").get("/").text


# What it lists


def test_admin_sees_every_owners_conversations_with_state_size_and_ttls(
    app, chat, chat_factory, admin_client, real_redis
):
    guest_conversation = chat.start_conversation("a guest asks")
    make_user(real_redis, "ada")
    ada = chat_factory(app)
    log_in(ada.client, "ada")
    ada_conversation = ada.start_conversation("ada asks")
    ada.send(ada_conversation, "and asks again")
    ada.wait_for_reply(ada_conversation)
    expired_conversation = chat.start_conversation("this one expires")
    end_session(real_redis, expired_conversation)

    listed = rows(admin_client.get("/admin").text)

    assert set(listed) == {guest_conversation, ada_conversation, expired_conversation}
    guest_id = real_redis.hget(keys.conversation_meta(guest_conversation), "owner")[6:]
    assert listed[guest_conversation]["owner"] == f"guest {guest_id[:6]}"
    assert listed[ada_conversation]["owner"] == "ada"
    assert listed[guest_conversation]["state"] == "active"
    assert listed[expired_conversation]["state"] == "expired"
    assert listed[guest_conversation]["messages"] == 2
    assert listed[ada_conversation]["messages"] == 4
    for conversation_id, row in listed.items():
        # The size is Redis's own: MEMORY USAGE of every key of the conversation, summed...
        assert row["bytes"] == sum(
            real_redis.memory_usage(key)
            for key in keys_of(real_redis, conversation_id)
            - earlier_runs_events(real_redis, conversation_id)
        )
        assert 580 <= row["transcript_ttl"] <= 600
    # ...but for the events of earlier runs, kept an hour after they ended.
    assert len(earlier_runs_events(real_redis, ada_conversation)) == 1
    assert 50 <= listed[guest_conversation]["session_ttl"] <= 60
    assert listed[expired_conversation]["session_ttl"] is None


def test_filters_by_state_and_by_owner(app, chat, chat_factory, admin_client, real_redis):
    active = chat.start_conversation("still going")
    expired = chat.start_conversation("gone quiet")
    end_session(real_redis, expired)
    make_user(real_redis, "ada")
    ada = chat_factory(app)
    log_in(ada.client, "ada")
    adas = ada.start_conversation("ada's")

    assert set(rows(admin_client.get("/admin?state=active").text)) == {active, adas}
    assert set(rows(admin_client.get("/admin?state=expired").text)) == {expired}
    assert set(rows(admin_client.get("/admin?owner=ADA").text)) == {adas}
    assert set(rows(admin_client.get("/admin?owner=guest").text)) == {active, expired}
    assert set(rows(admin_client.get("/admin?owner=guest&state=expired").text)) == {expired}
    guest_owner = real_redis.hget(keys.conversation_meta(active), "owner")
    assert set(rows(admin_client.get(f"/admin?owner={guest_owner}").text)) == {active, expired}
    unknown = admin_client.get("/admin?owner=nobody")
    assert rows(unknown.text) == {}
    assert "There is no account named “nobody”." in unescape(unknown.text)


def create_conversations(real_redis, count, owner=lambda n: f"guest:g{n % 7}", expired=None):
    """Conversations made directly in Redis, as create_conversation leaves them (meta hash,
    session unless ``expired(n)``, owner index), no model calls; one pipeline per thousand."""
    ids, now = [], time.time()
    for start in range(0, count, 1000):
        pipe = real_redis.pipeline(transaction=False)
        for n in range(start, min(start + 1000, count)):
            conversation_id = f"conv{n:06d}-{conversations.new_id()[:8]}"
            ids.append(conversation_id)
            meta = keys.conversation_meta(conversation_id)
            pipe.hset(
                meta,
                mapping={
                    "owner": owner(n),
                    "created_at": now - n,
                    "updated_at": now,
                    "message_count": n % 9,
                },
            )
            pipe.expire(meta, 600)
            pipe.zadd(keys.owner_conversations(owner(n)), {conversation_id: now})
            if not (expired and expired(n)):
                session = keys.conversation_session(conversation_id)
                pipe.hset(session, mapping={"started_at": now, "expires_at": now + 60})
                pipe.expire(session, 60)
        pipe.execute()
    deadlines.rebuild(real_redis, Lifetimes(60, 3600, 600))  # as `resume-chat repair` does
    return ids


def visit_every_page(client, path):
    """The rows of each page, following "Next page" links until there is none."""
    pages = []
    while path:
        html = client.get(path).text
        pages.append(list(rows(html)))
        found = NEXT_PAGE.search(html)
        path = unescape(found[1]) if found else None
        assert len(pages) < 100, "the pages never end"
    return pages


def test_paging_with_the_cursor_visits_every_conversation_exactly_once(make_app, real_redis):
    app = make_app(ADMIN_PAGE_SIZE=5)
    make_user(real_redis, "root", admin=True)
    client = log_in(app.test_client(), "root")
    created = create_conversations(real_redis, 53, expired=lambda n: n % 3 == 0)

    pages = visit_every_page(client, "/admin")
    visited = [conversation_id for page in pages for conversation_id in page]
    assert sorted(visited) == sorted(created)  # each exactly once
    assert len(pages) > 5
    assert max(len(page) for page in pages) <= 20  # about ADMIN_PAGE_SIZE: SCAN is rough

    expired_pages = visit_every_page(client, "/admin?state=expired&owner=guest")
    visited = [conversation_id for page in expired_pages for conversation_id in page]
    assert sorted(visited) == sorted(created[::3])
    assert "state=expired" in NEXT_PAGE.search(client.get("/admin?state=expired").text)[1]


def commands_served(real_redis):
    """Commands the server has run, by INFO commandstats (INFO itself left out)."""
    stats = real_redis.info("commandstats")
    return sum(stat["calls"] for name, stat in stats.items() if name != "cmdstat_info")


def test_a_page_costs_a_bounded_number_of_round_trips_with_10000_conversations(
    admin_client, real_redis, monkeypatch, capsys
):
    users = [make_user(real_redis, f"user{n}") for n in range(5)]

    def owner(n):
        return users[n % 5].owner if n % 2 else f"guest:g{n % 101}"

    ids = create_conversations(real_redis, 10_000, owner=owner, expired=lambda n: n % 3 == 0)
    guests = {cid for n, cid in enumerate(ids) if owner(n) == "guest:g7"}
    counted = RoundTrips(monkeypatch)

    def measure(path):
        counted.count, before = 0, commands_served(real_redis)
        page = admin_client.get(path)
        assert page.status_code == 200
        trips = counted.count
        return page.text, trips, commands_served(real_redis) - before - 1  # less the INFO

    html, trips, commands = measure("/admin")
    assert "Conversations by state: active 6666, parked 0, expired 3334" in html
    listed = rows(html)
    next_html, next_trips, next_commands = measure(unescape(NEXT_PAGE.search(html)[1]))
    filtered_html, filtered_trips, filtered_commands = measure("/admin?state=expired&owner=user3")
    guest_html, guest_trips, guest_commands = measure("/admin?owner=guest:g7")
    with capsys.disabled():
        print(
            f"\n10,000 conversations: first page {trips} round trips / {commands} commands "
            f"({len(listed)} rows); next page {next_trips} / {next_commands} "
            f"({len(rows(next_html))} rows); filtered {filtered_trips} / {filtered_commands} "
            f"({len(rows(filtered_html))} rows); one guest's {guest_trips} / {guest_commands} "
            f"({len(rows(guest_html))} rows)"
        )
    assert 40 <= len(listed) <= 70  # a page is about ADMIN_PAGE_SIZE (50) rows
    # Login check, a few SCAN calls each with its facts, sizes, the counts by state (three
    # ZCOUNTs), failures chart, audit log: the same whatever the number of conversations.
    assert trips <= 16
    assert next_trips <= 16
    # Per row: 5 reads of facts and at most 9 MEMORY USAGE (its 8 keys and its latest run's
    # events), plus a few for the page.
    assert commands <= 14 * len(listed) + 40
    assert len(rows(filtered_html)) > 0
    assert filtered_trips <= 2 * 20 + 8  # at most MAX_SCANS_PER_PAGE rounds of SCAN + facts
    assert filtered_commands < 5 * 10_000  # less than reading every conversation's facts
    # One owner's page reads that owner's index: all of a guest's conversations on its first
    # page, for no more than twice the unfiltered first page.
    assert set(rows(guest_html)) == guests and len(guests) == 49
    assert guest_trips <= trips and guest_commands <= 2 * commands
    assert "keys" not in {name.removeprefix("cmdstat_") for name in real_redis.info("commandstats")}


# Actions: confirmed, audited, exact


def test_clearing_a_conversation_asks_first_then_deletes_every_key_of_it(
    app, chat, admin_client, real_redis
):
    conversation_id = chat.start_conversation("clear me")
    chat.send(conversation_id, "a second message, a second run")
    chat.wait_for_reply(conversation_id)
    other = chat.start_conversation("keep me")
    owner = real_redis.hget(keys.conversation_meta(conversation_id), "owner")
    its_keys = keys_of(real_redis, conversation_id)
    assert len([key for key in its_keys if key.endswith(":events")]) == 2
    before = snapshot(real_redis, [conversation_id, other])
    path = "/admin/conversations/clear"

    confirm_page = act(admin_client, path, conversation_id=conversation_id)
    assert confirm_page.status_code == 200
    assert f"Clear conversation {conversation_id}?" in confirm_page.text
    assert 'name="confirm" value="yes"' in confirm_page.text
    assert f'action="{path}"' in confirm_page.text
    assert f'name="conversation_id" value="{conversation_id}"' in confirm_page.text
    assert CSRF_FIELD.search(confirm_page.text)
    assert snapshot(real_redis, [conversation_id, other]) == before  # nothing changed yet

    done = act(admin_client, path, confirm=True, conversation_id=conversation_id)
    assert done.status_code == 302
    assert keys_of(real_redis, conversation_id) == set()
    assert real_redis.zscore(keys.owner_conversations(owner), conversation_id) is None
    assert real_redis.zscore(keys.owner_conversations(owner), other) is not None
    assert snapshot(real_redis, [other]) == {
        key: value for key, value in before.items() if keys.conversation_id_of(key) == other
    }
    console = admin_client.get("/admin").text
    assert f"Cleared 1 conversation ({len(its_keys)} Redis keys)." in console
    assert conversation_id not in rows(console)
    when, who, action, target, cleared, deleted, detail = audit_rows(console)[0]
    assert (who, action, target, cleared, deleted) == (
        "root",
        "clear conversation",
        conversation_id,
        "1",
        str(len(its_keys)),
    )
    assert detail == f"owner guest {owner[6:12]}"

    # Its owner gets the friendly page for a conversation that is gone.
    page = chat.client.get(f"/c/{conversation_id}")
    assert page.status_code == 404
    assert "I couldn't find that conversation" in unescape(page.text)
    assert other in chat.client.get("/").text
    assert conversation_id not in chat.client.get("/").text


def test_clearing_a_conversation_while_its_reply_is_written_stops_the_run(
    make_app, chat_factory, real_redis
):
    app = make_app(OFFLINE_CHUNK_DELAY_SECONDS=0.2)
    chat = chat_factory(app)
    make_user(real_redis, "root", admin=True)
    admin_client = log_in(app.test_client(), "root")
    conversation_id = chat.conversation_id_of(chat.start("write slowly"))
    assert any(
        member.startswith(f"{conversation_id} ")
        for member in real_redis.zrange(keys.RUNS_RUNNING, 0, -1)
    )

    act(admin_client, "/admin/conversations/clear", confirm=True, conversation_id=conversation_id)

    assert real_redis.zrange(keys.RUNS_RUNNING, 0, -1) == []
    time.sleep(0.6)  # the writer notices at its next chunk and stops, writing nothing back
    assert keys_of(real_redis, conversation_id) == set()


def test_clearing_an_owners_conversations_leaves_everyone_elses(
    app, chat, chat_factory, admin_client, real_redis
):
    ada_user = make_user(real_redis, "ada")
    ada = chat_factory(app)
    log_in(ada.client, "ada")
    adas = [ada.start_conversation("one"), ada.start_conversation("two")]
    guests = chat.start_conversation("not ada's")
    before = snapshot(real_redis, [guests])
    adas_keys = sum(len(keys_of(real_redis, conversation_id)) for conversation_id in adas)

    confirm_page = act(admin_client, "/admin/owners/clear", owner=ada_user.owner)
    assert "Clear every conversation of ada?" in confirm_page.text
    assert f'name="owner" value="{ada_user.owner}"' in confirm_page.text
    assert all(keys_of(real_redis, conversation_id) for conversation_id in adas)

    act(admin_client, "/admin/owners/clear", confirm=True, owner=ada_user.owner)

    assert all(keys_of(real_redis, conversation_id) == set() for conversation_id in adas)
    assert real_redis.zcard(keys.owner_conversations(ada_user.owner)) == 0
    assert snapshot(real_redis, [guests]) == before
    _, who, action, target, cleared, deleted, _ = audit_rows(admin_client.get("/admin").text)[0]
    assert (who, action, target, cleared) == ("root", "clear owner", "ada", "2")
    assert int(deleted) == adas_keys
    assert ada.client.get("/").status_code == 200  # the account itself is kept
    assert accounts.find_user(real_redis, "ada") is not None


def test_clearing_expired_conversations_leaves_active_ones(chat, admin_client, real_redis):
    active = [chat.start_conversation("active one"), chat.start_conversation("active two")]
    expired = [chat.start_conversation("expired one"), chat.start_conversation("expired two")]
    for conversation_id in expired:
        end_session(real_redis, conversation_id)
    before = snapshot(real_redis, active)

    confirm_page = act(admin_client, "/admin/expired/clear")
    assert "Clear every expired conversation?" in confirm_page.text
    assert "About 2 conversations" in confirm_page.text
    assert all(keys_of(real_redis, conversation_id) for conversation_id in expired)

    act(admin_client, "/admin/expired/clear", confirm=True)

    assert all(keys_of(real_redis, conversation_id) == set() for conversation_id in expired)
    assert snapshot(real_redis, active) == before
    console = admin_client.get("/admin").text
    assert set(rows(console)) == set(active)
    assert "Conversations by state: active 2, parked 0, expired 0" in console  # counted again
    assert audit_rows(console)[0][1:5] == [
        "root",
        "clear expired",
        "every expired conversation",
        "2",
    ]


def test_sign_out_everywhere_makes_the_users_old_cookie_useless(app, admin_client, real_redis):
    make_user(real_redis, "ada")
    ada = log_in(app.test_client(), "ada")
    assert '<span class="who">ada</span>' in ada.get("/").text

    confirm_page = act(admin_client, "/admin/users/sign-out", username="ada")
    assert "Sign ada out everywhere?" in confirm_page.text
    assert '<span class="who">ada</span>' in ada.get("/").text  # nothing happened yet
    cookie = ada.get_cookie("session").value

    done = act(admin_client, "/admin/users/sign-out", confirm=True, username="ada")
    assert done.status_code == 302

    assert '<span class="who">ada</span>' not in ada.get("/").text  # the same browser
    replayed = app.test_client()
    replayed.set_cookie("session", cookie)
    assert '<span class="who">ada</span>' not in replayed.get("/").text
    console = admin_client.get("/admin").text
    assert "Signed ada out everywhere: 1 live login ended." in console
    assert audit_rows(console)[0][1:4] == ["root", "sign out everywhere", "ada"]


def test_signing_out_an_unknown_user_says_so(admin_client, real_redis):
    response = act(admin_client, "/admin/users/sign-out", confirm=True, username="nobody")
    assert response.status_code == 404
    assert "There is no account named “nobody”." in unescape(response.text)
    assert not real_redis.exists(keys.ADMIN_AUDIT)


def test_the_audit_log_shows_the_latest_50_entries_newest_first(admin_client, real_redis):
    for n in range(55):
        act(
            admin_client,
            "/admin/conversations/clear",
            confirm=True,
            conversation_id=f"gone{n:04d}xyz",
        )
    entries = audit_rows(admin_client.get("/admin").text)
    assert len(entries) == 50
    assert [entry[3] for entry in entries[:2]] == ["gone0054xyz", "gone0053xyz"]
    assert entries[0][6] == "already gone"


def test_the_overview_draws_inline_svg_without_inline_styles_or_scripts(admin_client):
    html = admin_client.get("/admin").text
    assert html.count("<svg") == 2
    assert "Resume failures in the last 24 hours: 0 in all" in html
    assert "style=" not in html
    assert "<script" not in html


def test_actions_refuse_targets_that_are_not_ids(admin_client, real_redis):
    bad_id = act(admin_client, "/admin/conversations/clear", confirm=True, conversation_id="*")
    assert bad_id.status_code == 404
    assert "That is not a conversation id." in bad_id.text
    bad_owner = act(admin_client, "/admin/owners/clear", confirm=True, owner="*")
    assert bad_owner.status_code == 400
    assert not real_redis.exists(keys.ADMIN_AUDIT)


def park(client, conversation_id):
    """Ask for a resume code as the idle timer does; the code."""
    response = client.post(
        f"/c/{conversation_id}/park",
        data={"csrf_token": csrf(client, f"/c/{conversation_id}")},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json["code"]


def test_a_parked_conversation_is_listed_so_and_clearing_it_deletes_its_code(
    chat, admin_client, real_redis
):
    parked = chat.start_conversation("park me")
    active = chat.start_conversation("keep going")
    code = park(chat.client, parked)
    assert set(real_redis.scan_iter(match=keys.RESUME_CODES_PATTERN))

    console = admin_client.get("/admin").text
    assert rows(console)[parked]["state"] == "parked"
    assert rows(console)[active]["state"] == "active"
    assert set(rows(admin_client.get("/admin?state=parked").text)) == {parked}
    assert "Conversations by state: active 1, parked 1, expired 0" in console
    act(admin_client, "/admin/expired/clear", confirm=True)
    assert keys_of(real_redis, parked)  # parked is not expired

    its_keys = keys_of(real_redis, parked)
    act(admin_client, "/admin/conversations/clear", confirm=True, conversation_id=parked)

    assert keys_of(real_redis, parked) == set()
    assert set(real_redis.scan_iter(match=keys.RESUME_CODES_PATTERN)) == set()
    deleted = audit_rows(admin_client.get("/admin").text)[0][5]
    assert deleted == str(len(its_keys) + 1)  # and its code
    entry = chat.client.post(
        "/resume", data={"csrf_token": csrf(chat.client, "/resume"), "code": code}
    )
    assert entry.status_code == 404
    assert "There is no conversation for that code." in entry.text


def test_the_console_shows_the_tokens_each_conversation_was_billed_for(
    make_claude_app, real_redis, fake_anthropic
):
    app = make_claude_app()
    make_user(real_redis, "root", admin=True)
    admin = log_in(app.test_client(), "root")
    chat = Chat(app.test_client())
    talked = chat.start_conversation("How long do tides take?")
    chat.send(talked, "And spring tides?")
    chat.wait_for_reply(talked)
    meta = real_redis.hgetall(keys.conversation_meta(talked))
    billed = sum(int(meta.get(field, 0)) for field in USAGE_FIELDS)
    assert billed > 0
    assert rows(admin.get("/admin").text)[talked]["tokens"] == billed
