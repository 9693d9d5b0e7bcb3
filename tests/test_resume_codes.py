"""Resume codes (S3, S4; journeys 2, 3, 11, 12): what a code looks like and how it is typed,
how it is kept (only a keyed hash), parking and redeeming over HTTP, accounts, expiry, and
the limit on failed entries per client address."""

import logging
import math
import re
import time
from html import unescape
from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Chat, RoundTrips
from tests.test_auth import csrf, log_in, register
from tests.test_metrics import admin_client_of, scrape, value
from webapp import accounts, conversations, lifecycle, metrics, rate_limits, resume_codes
from webapp.rate_limits import Window
from webapp.resume_codes import ALPHABET, FAILED_ENTRIES, FAILED_ENTRY_LIMITS, LENGTH, normalise
from webapp.storage import keys
from webapp.views.resume import PENDING_CODE

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
FORMATTED = re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$")
TEST_SECRET = "test-secret"  # make_app's SECRET_KEY
LOOKALIKE_OF = {"0": "Oo", "1": "IiLl", "V": "Uu"}

codes = st.text(alphabet=ALPHABET, min_size=LENGTH, max_size=LENGTH)


# What a code is, and how it may be typed (properties).


def test_generated_codes_are_sixteen_characters_of_the_alphabet_from_secrets(monkeypatch):
    made = [resume_codes.generate() for _ in range(2000)]
    assert all(len(code) == LENGTH and set(code) <= set(ALPHABET) for code in made)
    assert len(set(made)) == len(made)
    assert set("".join(made)) == set(ALPHABET)  # every character is used

    drawn = []

    def recording_choice(sequence):
        drawn.append(sequence)
        return sequence[0]

    monkeypatch.setattr(resume_codes.secrets, "choice", recording_choice)
    assert resume_codes.generate() == ALPHABET[0] * LENGTH
    assert drawn == [ALPHABET] * LENGTH  # every character drawn from `secrets`


def test_the_alphabet_is_typeable_and_gives_at_least_64_bits():
    assert len(set(ALPHABET)) == len(ALPHABET) == 32
    assert not set(ALPHABET) & set("ILOU")  # no look-alikes of 1, 0 and V
    assert set(ALPHABET) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert len(ALPHABET) ** LENGTH >= 2**64
    assert math.log2(len(ALPHABET)) * LENGTH == 80


@given(codes)
def test_formatted_is_four_groups_of_four_and_normalises_back(code):
    shown = resume_codes.formatted(code)
    assert FORMATTED.match(shown)
    assert shown.replace("-", "") == code
    assert normalise(shown) == code


@st.composite
def typed(draw, code):
    """``code`` as someone might type it: any case, spaces and hyphens anywhere, and
    look-alike letters where the code has 0, 1 or V."""
    separators = st.text(alphabet=" -", max_size=3)
    entry = draw(separators)
    for character in code:
        if character in LOOKALIKE_OF and draw(st.booleans()):
            character = draw(st.sampled_from(LOOKALIKE_OF[character]))
        elif draw(st.booleans()):
            character = character.lower()
        entry += character + draw(separators)
    return entry


@given(st.data(), codes)
def test_case_spaces_hyphens_and_lookalikes_are_forgiven(data, code):
    entry = data.draw(typed(code))
    assert normalise(entry) == code


@given(codes)
def test_every_lookalike_at_once_maps_back(code):
    entry = "".join(LOOKALIKE_OF[c][0] if c in LOOKALIKE_OF else c for c in code)
    assert normalise(entry.lower()) == code
    assert normalise(entry) == code


@given(codes, st.text(alphabet="\t\n\xa0\u2003 ", min_size=1, max_size=3))
def test_any_whitespace_between_groups_is_ignored(code, gap):
    assert normalise(gap.join(resume_codes.formatted(code).split("-"))) == code


def _foreign(character: str) -> bool:
    """Not a character a code may be typed with: neither a code character in either case,
    a look-alike, a hyphen nor whitespace. (Unicode case mapping makes a few non-ASCII
    letters count as their ASCII capitals, such as "ı" as I and so 1: still a code.)"""
    if character.isspace() or character == "-":
        return False
    upper = character.upper().translate(resume_codes.LOOKALIKES)
    return not all(c in ALPHABET for c in upper)


@given(st.data(), codes, st.characters().filter(_foreign))
def test_a_character_outside_the_alphabet_is_never_a_code(data, code, stranger):
    entry = data.draw(typed(code))
    at = data.draw(st.integers(0, len(entry)))
    replace = data.draw(st.booleans())
    entry = entry[:at] + stranger + entry[at + replace :]
    assert normalise(entry) is None


@given(
    st.text(alphabet=ALPHABET, max_size=40).filter(lambda text: len(text) != LENGTH),
    st.booleans(),
)
def test_the_wrong_length_is_never_a_code(text, grouped):
    entry = "-".join(text[i : i + 4] for i in range(0, len(text), 4)) if grouped else text
    assert normalise(entry) is None
    assert normalise(entry.lower()) is None


def test_the_stored_hash_is_keyed_with_the_apps_secret():
    code = resume_codes.generate()
    digest = resume_codes.keyed_hash(TEST_SECRET, code)
    assert digest != resume_codes.keyed_hash("another-secret", code)
    assert code not in digest and len(digest) == 64


# Helpers acting as a browser.


def csrf_of(client, path):
    return CSRF_FIELD.search(client.get(path).text)[1]


def park(client, conversation_id, as_json=True):
    """Ask for a resume code as the idle timer (JSON) or the no-script button does."""
    accept = "application/json" if as_json else "text/html"
    return client.post(
        f"/c/{conversation_id}/park",
        data={"csrf_token": csrf_of(client, f"/c/{conversation_id}")},
        headers={"Accept": accept},
    )


def issue_code(client, conversation_id) -> str:
    response = park(client, conversation_id)
    assert response.status_code == 200, response.text
    return response.json["code"]


def enter_code(client, code):
    """Type a code at /resume, as the form sends it."""
    return client.post("/resume", data={"csrf_token": csrf_of(client, "/resume"), "code": code})


def touch(client, conversation_id):
    return client.post(
        f"/c/{conversation_id}/touch",
        data={"csrf_token": csrf_of(client, f"/c/{conversation_id}")},
    )


def browser_at(app, address=None) -> Chat:
    """Another browser (its own cookies), optionally from another client address."""
    client = app.test_client()
    if address:
        client.environ_base["REMOTE_ADDR"] = address
    return Chat(client)


def failures(r) -> dict[str, int]:
    prefix = "resume_failures:"
    return {
        field[len(prefix) :]: count
        for field, count in metrics.read_counters(r).items()
        if field.startswith(prefix)
    }


def refused(response, status, words):
    """The response is the refusal page with ``status``, saying ``words``."""
    alert = re.search(r'role="alert">([^<]*)<', response.text)
    said = unescape(alert[1]) if alert else response.text[:300]
    assert response.status_code == status, said
    assert words in unescape(response.text), said


def lands_in(response, conversation_id):
    assert response.status_code == 302, response.text
    assert response.location == f"/c/{conversation_id}#latest"


def forms_of(code: str, digest: bool = True) -> list[str]:
    """Every way a code might show up where it must not (its keyed hash too, unless it is
    looked for where that hash is meant to be)."""
    plain = code.replace("-", "")
    forms = [code, plain, code.lower(), plain.lower()]
    return forms + [resume_codes.keyed_hash(TEST_SECRET, plain)] if digest else forms


def random_wrong_code() -> str:
    return resume_codes.formatted(resume_codes.generate())


def everything_in(r):
    """Every key and every value in the database, as text."""
    texts = []
    for key in r.scan_iter(count=1000):
        texts.append(key)
        kind = r.type(key)
        if kind == "string":
            texts.append(r.get(key))
        elif kind == "hash":
            texts += [f"{k}={v}" for k, v in r.hgetall(key).items()]
        elif kind == "list":
            texts += r.lrange(key, 0, -1)
        elif kind == "set":
            texts += r.smembers(key)
        elif kind == "zset":
            texts += [f"{m}={s}" for m, s in r.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            texts += [f"{i}={f}" for i, f in r.xrange(key)]
        else:
            raise AssertionError(f"{key} has an unexpected type {kind}")
    return texts


# Never stored, never logged (S3).


def test_a_code_is_stored_only_as_its_keyed_hash_and_never_logged(app, chat, real_redis, caplog):
    conversation_id = chat.start_conversation("Something private")
    caplog.set_level(logging.DEBUG)
    code = issue_code(chat.client, conversation_id)
    plain = normalise(code)
    digest = resume_codes.keyed_hash(TEST_SECRET, plain)
    assert real_redis.hget(keys.resume_code(digest), "conversation_id") == conversation_id
    stored = everything_in(real_redis)
    for form in forms_of(code, digest=False):
        assert not any(form in text for text in stored), f"{form} is stored"
    session = real_redis.hgetall(keys.conversation_session(conversation_id))
    assert session["code_hint"] == plain[:4]  # the first group only, for its owner to see

    lands_in(enter_code(browser_at(app).client, code.lower()), conversation_id)
    stored = everything_in(real_redis)
    for form in forms_of(code, digest=False):
        assert not any(form in text for text in stored), f"{form} is stored after redeeming"
    logged = caplog.text + "".join(str(record.args) for record in caplog.records)
    for form in forms_of(code):
        assert form not in logged


# Redeeming over HTTP (journey 3).


def guest_id_of(chat: Chat) -> str:
    with chat.client.session_transaction() as session:
        return session["guest_id"]


def test_a_guests_code_opens_the_conversation_once_in_another_browser(app, chat, real_redis):
    conversation_id = chat.start_conversation("Plan a picnic for six")
    code = issue_code(chat.client, conversation_id)
    phone = browser_at(app)

    lands_in(enter_code(phone.client, code), conversation_id)
    page = unescape(phone.client.get(f"/c/{conversation_id}").text)
    assert "Plan a picnic for six" in page
    assert f'href="/c/{conversation_id}"' in phone.client.get("/").text  # listed there now
    # The guest's code was the guest's key: the conversation moved to the phone, and the
    # first browser no longer has it.
    assert chat.client.get(f"/c/{conversation_id}").status_code == 404
    assert conversation_id not in chat.client.get("/").text
    owner = conversations.get_conversation(real_redis, conversation_id).owner
    assert owner == f"guest:{guest_id_of(phone)}"

    refused(enter_code(phone.client, code), 404, "already been used")
    refused(enter_code(browser_at(app).client, code), 404, "already been used")
    assert failures(real_redis) == {"used": 2}
    counters = metrics.read_counters(real_redis)
    assert (counters["resume_codes_issued"], counters["resume_codes_redeemed"]) == (1, 1)


def test_of_two_entries_that_read_the_code_together_only_the_first_to_use_it_gets_it(
    app, chat, real_redis
):
    """The read of a code uses nothing: resuming the session is what uses it, once. Two
    browsers whose entries both read the code before either was redeemed: the second is
    told it was used, and the conversation is the first's alone."""
    conversation_id = chat.start_conversation("Plan a picnic for six")
    code = issue_code(chat.client, conversation_id)
    digest = resume_codes.keyed_hash(TEST_SECRET, normalise(code))
    read_by_both = real_redis.hgetall(keys.resume_code(digest))
    lifetimes = conversations.Lifetimes(1800, 86400, 604800)

    first, second = "guest:first-phone", "guest:second-phone"
    had = conversations.get_conversation(real_redis, conversation_id).owner
    redeemed = resume_codes.redeem_for(real_redis, digest, first, lifetimes, code=read_by_both)
    assert redeemed == conversation_id
    try:
        resume_codes.redeem_for(real_redis, digest, second, lifetimes, code=read_by_both)
        raise AssertionError("the code was used twice")
    except resume_codes.CodeRefused as refused:
        assert refused.reason == resume_codes.USED

    assert conversations.get_conversation(real_redis, conversation_id).owner == first
    assert real_redis.zrange(keys.owner_conversations(first), 0, -1) == [conversation_id]
    assert not real_redis.exists(keys.owner_conversations(second))
    assert real_redis.hget(keys.DEADLINES_OWNERS, conversation_id) == first
    assert failures(real_redis) == {"used": 1}
    assert metrics.read_counters(real_redis)["resume_codes_redeemed"] == 1
    assert conversation_id not in real_redis.zrange(keys.owner_conversations(had), 0, -1)


def test_a_redemption_is_two_round_trips_on_one_server(chat, real_redis, monkeypatch):
    """The code read, then one script that uses it and settles the redemption (its index
    entries, its mirror, its count), sent with the code marked used."""
    conversation_id = chat.start_conversation("Pack for a week of rain")
    digest = resume_codes.keyed_hash(
        TEST_SECRET, normalise(issue_code(chat.client, conversation_id))
    )
    lifetimes = conversations.Lifetimes(1800, 86400, 604800)
    real_redis.ping()  # its connection made (HELLO, CLIENT SETINFO) before counting
    counted = RoundTrips(monkeypatch)

    resume_codes.redeem_for(real_redis, digest, "guest:other-phone", lifetimes)

    assert counted.count == 2
    assert real_redis.zrange(keys.owner_conversations("guest:other-phone"), 0, -1) == [
        conversation_id
    ]
    assert metrics.read_counters(real_redis)["resume_codes_redeemed"] == 1


def test_redeeming_brings_the_session_back_whole(app, chat, real_redis):
    conversation_id = chat.start_conversation("I am learning the cello.")
    chat.send(conversation_id, "I practise every evening.")
    chat.wait_for_reply(conversation_id)
    before = conversations.read_messages(real_redis, conversation_id)
    context_before = lifecycle.read_session(real_redis, conversation_id).context_from
    code = issue_code(chat.client, conversation_id)
    assert lifecycle.read_session(real_redis, conversation_id).parked

    phone = browser_at(app)
    lands_in(enter_code(phone.client, code.lower().replace("-", " ")), conversation_id)
    session = lifecycle.read_session(real_redis, conversation_id)
    conversation = conversations.get_conversation(real_redis, conversation_id)
    assert lifecycle.state_of(conversation, session) == lifecycle.ACTIVE
    assert (session.parked_until, session.code_hint, session.context_from) == (
        0,
        "",
        context_before,
    )
    assert conversations.read_messages(real_redis, conversation_id) == before  # no note added
    page = unescape(phone.client.get(f"/c/{conversation_id}").text)
    assert "Where were we?" not in page and "Caught up" not in page
    assert page.count('<article class="message') == 4

    assert phone.send(conversation_id, "What should I play next?").status_code == 302
    phone.wait_for_reply(conversation_id)
    reply = conversations.read_messages(real_redis, conversation_id)[-1]
    assert reply.role == "assistant"
    assert "This is message 3 of our conversation." in reply.content
    assert "You started with: “I am learning the cello.”" in reply.content


def test_an_accounts_code_asks_a_stranger_to_log_in_without_the_code_in_any_url(app, client, chat):
    register(client, "ada")
    conversation_id = chat.start_conversation("Ada's plans")
    code = issue_code(client, conversation_id)
    stranger = app.test_client()

    asked = enter_code(stranger, code)
    assert asked.status_code == 302
    assert unquote(asked.location) == "/login?next=/resume/continue"
    with stranger.session_transaction() as session:
        assert session[PENDING_CODE] == resume_codes.keyed_hash(TEST_SECRET, normalise(code))
    login_page = stranger.get(asked.location).text
    assert 'name="next" value="/resume/continue"' in login_page
    for form in forms_of(code):
        assert form not in asked.location
        assert form not in login_page
    assert conversations.get_conversation(
        app.extensions["redis"], conversation_id
    ).owner.startswith("user:")


def test_after_logging_in_the_stranger_lands_in_the_conversation(app, client, chat):
    register(client, "ada")
    conversation_id = chat.start_conversation("Ada's plans")
    code = issue_code(client, conversation_id)
    stranger = app.test_client()
    locations = []

    response = enter_code(stranger, code)
    locations.append(response.location)
    response = log_in(stranger, "ada", next_url="/resume/continue")
    while response.status_code == 302:
        locations.append(response.location)
        response = stranger.get(response.location)
    for form in forms_of(code):
        assert not any(form in location for location in locations)
    assert locations[-1] == f"/c/{conversation_id}#latest", locations
    assert "Ada's plans" in unescape(response.text)


def test_another_account_is_refused_and_the_owner_can_still_use_the_code(
    app, client, chat, real_redis
):
    register(client, "ada")
    conversation_id = chat.start_conversation("Ada's secret plans")
    code = issue_code(client, conversation_id)

    bob = app.test_client()
    register(bob, "bob")
    refused(enter_code(bob, code), 403, "belongs to a conversation of another account")
    assert failures(real_redis) == {"wrong_account": 1}
    assert bob.get(f"/c/{conversation_id}").status_code == 404

    adas_phone = app.test_client()
    log_in(adas_phone, "ada")
    lands_in(enter_code(adas_phone, code), conversation_id)
    assert "Ada's secret plans" in unescape(adas_phone.get(f"/c/{conversation_id}").text)


def test_a_code_past_its_lifetime_has_expired(make_app, chat_factory, real_redis):
    app = make_app(RESUME_CODE_TTL_SECONDS=2)
    chat = chat_factory(app)
    conversation_id = chat.start_conversation("Short-lived")
    code = issue_code(chat.client, conversation_id)
    code_key = keys.resume_code(resume_codes.keyed_hash(TEST_SECRET, normalise(code)))
    expires_at = float(real_redis.hget(code_key, "expires_at"))
    deadline = time.monotonic() + 10
    while real_redis.time()[0] < expires_at:  # the server's clock, as the script reads it
        assert time.monotonic() < deadline, "the code did not expire"
        time.sleep(0.05)

    refused(enter_code(browser_at(app).client, code), 404, "That code has expired")
    assert failures(real_redis) == {"expired": 1}
    assert real_redis.exists(code_key)  # still recognised, to say "expired", not "unknown"


def test_right_after_the_parked_session_ends_the_code_has_expired(
    make_app, chat_factory, real_redis
):
    app = make_app(RESUME_CODE_TTL_SECONDS=2)
    chat = chat_factory(app)
    conversation_id = chat.start_conversation("Short-lived")
    deadline = time.monotonic() + 5
    while time.time() % 1 > 0.3:  # park early in a second, so the gap is most of a second
        assert time.monotonic() < deadline
        time.sleep(0.01)
    code = issue_code(chat.client, conversation_id)
    while real_redis.exists(keys.conversation_session(conversation_id)):
        assert time.monotonic() < deadline, "the parked session did not end"
        time.sleep(0.02)
    refused(enter_code(browser_at(app).client, code), 404, "That code has expired")


def test_unknown_and_malformed_codes_are_refused_and_counted(app, client, real_redis):
    refused(enter_code(client, random_wrong_code()), 404, "There is no conversation for that code")
    bad = enter_code(client, "7K2M-9XQD-4HPN")
    refused(bad, 400, "That isn't a resume code")
    assert resume_codes.FORMAT_HINT in unescape(bad.text)
    assert 'value="7K2M-9XQD-4HPN"' in bad.text  # what was typed, to correct
    refused(enter_code(client, "7K2M-9XQD-4HPN-T3V!"), 400, "That isn't a resume code")

    assert failures(real_redis) == {"unknown": 1, "malformed": 2}
    text = scrape(admin_client_of(app, real_redis))
    assert value(text, "resume_failures_total", reason="unknown") == 1
    assert value(text, "resume_failures_total", reason="malformed") == 2


# Parking (journey 2).


def test_a_parked_session_shows_its_hint_and_is_frozen_under_the_code(
    make_app, chat_factory, real_redis
):
    code_ttl = 5000  # longer than the session (60 s) and the transcript (600 s)
    app = make_app(RESUME_CODE_TTL_SECONDS=code_ttl)
    chat = chat_factory(app)
    conversation_id = chat.start_conversation("Bake sourdough")
    meta, messages, session_key, recent, *_ = keys.conversation_keys(conversation_id)
    answer = park(chat.client, conversation_id).json
    assert FORMATTED.match(answer["code"])
    assert (answer["exchanges"], answer["last_topic"]) == (1, "Bake sourdough")

    stored = real_redis.hgetall(session_key)
    assert stored["parked_until"] == stored["expires_at"]
    assert code_ttl - 2 <= real_redis.ttl(session_key) <= code_ttl
    for key in (meta, messages, recent):
        assert real_redis.ttl(key) >= real_redis.ttl(session_key)

    page = unescape(chat.client.get(f"/c/{conversation_id}").text)
    notice = re.search(r'<p class="session-clock parked">(.*?)</p>', page, re.S)[1]
    assert f"Resume code {answer['code'][:4]}-… saved" in notice
    assert f'valid until <time datetime="{answer["valid_until"]}" data-show="local">' in notice
    assert answer["code"] not in page  # shown once, when issued
    assert 'id="idle-dialog"' not in page  # no idle timer while parked

    ttl_before = real_redis.ttl(session_key)
    chat.client.get(f"/c/{conversation_id}")  # reading does not slide a parked session
    chat.client.get("/")
    assert real_redis.hgetall(session_key) == stored
    assert real_redis.ttl(session_key) <= ttl_before


def test_parking_never_shortens_the_transcript(make_app, chat_factory, real_redis):
    app = make_app(RESUME_CODE_TTL_SECONDS=30)  # shorter than the transcript's 600 s
    chat = chat_factory(app)
    conversation_id = chat.start_conversation("Keep me")
    issue_code(chat.client, conversation_id)
    meta, messages, session_key, recent, *_ = keys.conversation_keys(conversation_id)
    assert 28 <= real_redis.ttl(session_key) <= 30
    for key in (meta, messages, recent):
        assert real_redis.ttl(key) > 500


def test_asking_again_issues_a_new_code_and_withdraws_the_old(app, chat, real_redis):
    conversation_id = chat.start_conversation("Rotate me")
    old = issue_code(chat.client, conversation_id)
    new = issue_code(chat.client, conversation_id)
    assert old != new
    hint = real_redis.hget(keys.conversation_session(conversation_id), "code_hint")
    assert hint == new[:4]
    refused(enter_code(browser_at(app).client, old), 404, "")  # which reason: see below
    lands_in(enter_code(browser_at(app).client, new), conversation_id)


def test_a_replaced_code_is_refused_as_used(app, chat, real_redis):
    conversation_id = chat.start_conversation("Rotate me")
    old = issue_code(chat.client, conversation_id)
    issue_code(chat.client, conversation_id)
    refused(enter_code(browser_at(app).client, old), 404, "or a newer code replaced it")
    assert failures(real_redis) == {"used": 1}


def test_sending_a_message_unparks_and_retires_the_code(app, chat, real_redis):
    conversation_id = chat.start_conversation("Carry on here")
    code = issue_code(chat.client, conversation_id)
    assert chat.send(conversation_id, "I'm back").status_code == 302
    chat.wait_for_reply(conversation_id)
    session = real_redis.hgetall(keys.conversation_session(conversation_id))
    assert not {"parked_until", "code_hash", "code_hint"} & set(session)
    assert 55 <= real_redis.ttl(keys.conversation_session(conversation_id)) <= 60  # sliding
    refused(enter_code(browser_at(app).client, code), 404, "already been used")
    assert failures(real_redis) == {"used": 1}


# Without JavaScript (journey 12).


def test_without_javascript_the_button_shows_the_code_once_and_keep_chatting_unparks(
    app, chat, real_redis
):
    conversation_id = chat.start_conversation("No scripts here")
    page = chat.client.get(f"/c/{conversation_id}").text
    assert f'action="/c/{conversation_id}/park"' in page and "Get a resume code" in page

    shown = park(chat.client, conversation_id, as_json=False)
    assert shown.status_code == 200
    assert shown.content_type.startswith("text/html")
    html = unescape(shown.text)
    assert "Your resume code" in html and "Valid until" in html
    code = re.search(r'<p class="code">([^<]+)</p>', html)[1]
    assert FORMATTED.match(code) and html.count(code) == 1
    assert f'action="/c/{conversation_id}/touch"' in html and "Keep chatting" in html
    assert lifecycle.read_session(real_redis, conversation_id).parked
    assert code not in chat.client.get(f"/c/{conversation_id}").text  # only once

    kept = touch(chat.client, conversation_id)
    assert kept.status_code == 302 and kept.location == f"/c/{conversation_id}#latest"
    session = lifecycle.read_session(real_redis, conversation_id)
    assert not session.parked and session.code_hint == ""
    page = chat.client.get(f"/c/{conversation_id}").text
    assert "session-clock parked" not in page and 'id="idle-dialog"' in page
    refused(enter_code(browser_at(app).client, code), 404, "already been used")


# Brute force (S4, journey 11).


def test_ten_failures_a_minute_then_slow_down_even_for_the_right_code(app, chat, real_redis):
    assert [(w.limit, w.seconds) for w in FAILED_ENTRY_LIMITS] == [(10, 60), (100, 86400)]
    conversation_id = chat.start_conversation("Guard me")
    code = issue_code(chat.client, conversation_id)
    intruder = browser_at(app).client

    for _ in range(10):
        refused(enter_code(intruder, random_wrong_code()), 404, "no conversation for that code")
    slowed = enter_code(intruder, random_wrong_code())
    refused(slowed, 429, "Slow down")
    assert slowed.headers["Retry-After"] == "60"
    refused(enter_code(intruder, code), 429, "Slow down")  # limited: not even the right one
    assert failures(real_redis) == {"unknown": 10, "rate_limited": 2}
    assert lifecycle.read_session(real_redis, conversation_id).parked  # the code is intact

    elsewhere = browser_at(app, "10.0.0.2").client  # another client address
    refused(enter_code(elsewhere, random_wrong_code()), 404, "no conversation for that code")
    lands_in(enter_code(elsewhere, code), conversation_id)


def test_a_success_does_not_count_toward_the_limit(app, chat, real_redis):
    first = chat.start_conversation("One")
    second = chat.start_conversation("Two")
    codes = [issue_code(chat.client, first), issue_code(chat.client, second)]
    visitor = browser_at(app).client
    for _ in range(9):
        refused(enter_code(visitor, random_wrong_code()), 404, "no conversation")
    lands_in(enter_code(visitor, codes[0]), first)
    lands_in(enter_code(visitor, codes[1]), second)
    refused(enter_code(visitor, random_wrong_code()), 404, "no conversation")  # the 10th
    refused(enter_code(visitor, random_wrong_code()), 429, "Slow down")


def any_address_window(window: Window) -> str:
    """A SCAN pattern matching the failed entries' ``window`` of every address."""
    return rate_limits.window_key("*", FAILED_ENTRIES, window)


def test_a_hundred_failures_a_day_per_address(app, real_redis):
    per_minute, per_day = FAILED_ENTRY_LIMITS
    visitor = browser_at(app).client
    for minute in range(10):
        for _ in range(10):
            refused(enter_code(visitor, random_wrong_code()), 404, "no conversation")
        refused(enter_code(visitor, random_wrong_code()), 429, "Slow down")
        # A minute passes: only the per-minute window is forgotten.
        windows = list(real_redis.scan_iter(match=any_address_window(per_minute)))
        assert len(windows) == 1, windows
        real_redis.delete(*windows)
        assert minute < 9 or list(real_redis.scan_iter(match=any_address_window(per_day)))
    refused(enter_code(visitor, random_wrong_code()), 429, "Slow down")
    assert failures(real_redis)["unknown"] == 100


def test_two_hundred_random_codes_find_nothing(app, chat, real_redis):
    conversation_id = chat.start_conversation("Needle")
    issue_code(chat.client, conversation_id)
    statuses = []
    for address in range(20):  # from many addresses, so that every one is really tried
        visitor = browser_at(app, f"10.1.0.{address}").client
        statuses += [enter_code(visitor, random_wrong_code()).status_code for _ in range(10)]
    assert statuses == [404] * 200
    one_address = browser_at(app).client
    statuses = [enter_code(one_address, random_wrong_code()).status_code for _ in range(200)]
    assert statuses == [404] * 10 + [429] * 190
    assert failures(real_redis) == {"unknown": 210, "rate_limited": 190}
    assert metrics.read_counters(real_redis).get("resume_codes_redeemed", 0) == 0
    assert lifecycle.read_session(real_redis, conversation_id).parked


def test_moving_a_conversation_into_an_account_retires_its_guest_code(app, chat, real_redis):
    """A guest's code is a bearer key: once the guest moves the conversation into an account,
    the code no longer opens it for another browser."""
    conversation_id = chat.start_conversation("Mine, soon an account's")
    code = issue_code(chat.client, conversation_id)
    assert register(chat.client, "keeper").location.startswith("/account/move")
    moved = chat.client.post(
        "/account/move", data={"csrf_token": csrf(chat.client, "/account/move"), "next": "/"}
    )
    assert moved.status_code == 302
    stranger = app.test_client()
    response = enter_code(stranger, code)
    assert response.status_code == 404
    assert "already been used" in response.text
    owner = conversations.get_conversation(real_redis, conversation_id).owner
    assert owner == accounts.find_user(real_redis, "keeper").owner
