"""The storage paths that reach beyond one conversation's hash slot (owner indexes, resume
codes, accounts, admin clearing and paging, counters), on fakeredis, the real server and a
three-master Redis Cluster; and what only a cluster can show: where keys land, scripts a
master has lost, and the whole app running on one."""

import time
from collections import defaultdict

import pytest
from redis.cluster import RedisCluster

from tests import expiry
from tests.conftest import Chat
from tests.limits import OUT_OF_REACH
from tests.test_replies import watch
from tests.test_resume_codes import enter_code, issue_code
from tests.test_runs import SETTINGS
from webapp import (
    accounts,
    conversations,
    create_app,
    deadlines,
    metrics,
    rate_limits,
    resume_codes,
    runs,
)
from webapp.admin import audit, listing
from webapp.conversations import Message
from webapp.storage import keys
from webapp.storage.scan import scan_page
from webapp.storage.scripts import ALL_SCRIPTS, APPEND_MESSAGE_AND_TOUCH, RESUME_PARKED_SESSION

SECRET = "cluster-secret"
PASSWORD = "correct horse battery"
NO_ADDRESS_LIMIT = (rate_limits.per_minute(1000),)


def user_message(text="Where do tides come from?"):
    return Message(conversations.new_id(), "user", text, time.time())


def chat_in(r, owner, lifetimes, text="Hello"):
    """A conversation of ``owner`` with one message in it; its id."""
    conversation_id = conversations.create_conversation(r, owner, lifetimes)
    conversations.append_message_and_touch(r, conversation_id, owner, user_message(text), lifetimes)
    return conversation_id


def test_the_repair_lists_again_a_running_run_the_index_lost_so_it_is_reaped(redis, lifetimes):
    conversation_id = chat_in(redis, "guest:crashed", lifetimes)
    run = runs.start_run(
        redis, conversation_id, "guest:crashed", lifetimes, SETTINGS, user_message=user_message()
    )
    runs.add_chunk(redis, run, "Half a repl", SETTINGS)
    # Its writer crashed long ago, and a cluster lost its entry in the index of running runs.
    long_ago = time.time() - 10 * SETTINGS.stale_seconds
    redis.hset(keys.conversation_run(conversation_id), "heartbeat_at", long_ago)
    redis.zrem(keys.RUNS_RUNNING, run.index_member)
    assert runs.reap_stale_runs(redis, lifetimes, SETTINGS) == 0
    assert runs.list_running_again(redis) == 1
    assert redis.zscore(keys.RUNS_RUNNING, run.index_member) == long_ago
    assert runs.reap_stale_runs(redis, lifetimes, SETTINGS) == 1
    assert runs.latest_run(redis, conversation_id).status == runs.INTERRUPTED
    assert conversations.read_messages(redis, conversation_id)[-1].content == "Half a repl"


@pytest.fixture(params=["real", "cluster"])
def server_redis(request):
    """The real server, then the cluster: the admin console sizes keys with MEMORY USAGE,
    which fakeredis lacks."""
    return request.getfixturevalue(f"{request.param}_redis")


def test_scan_pages_visit_every_key_once_and_end_at_zero(redis):
    made = {f"rc:conv:{{c{n}}}:meta" for n in range(60)}
    for key in made:
        redis.hset(key, "owner", "guest:x")
    redis.set("rc:conv:{other}:draft", "not a hash")
    seen, cursor, calls = [], 0, 0
    while True:
        cursor, found = scan_page(
            redis, cursor, match=keys.CONVERSATION_META_PATTERN, count=7, _type="hash"
        )
        seen += found
        calls += 1
        assert calls < 200, "the cursor never came back to 0"
        if cursor == 0:
            break
    assert sorted(seen) == sorted(made)


def test_the_sweeps_find_each_ended_session_once_and_drop_stale_index_entries(redis, lifetimes):
    alive = chat_in(redis, "guest:sweep", lifetimes)
    ended = [chat_in(redis, f"guest:s{n}", lifetimes) for n in range(3)]
    gone = chat_in(redis, "guest:sweep", lifetimes)
    for conversation_id in ended:
        expiry.end_session(redis, conversation_id)
    expiry.end_conversation(redis, gone)
    assert deadlines.sweep(redis, batch=2) == deadlines.Swept(
        sessions_ended=3, conversations_gone=1
    )
    assert deadlines.sweep(redis) == deadlines.Swept(sessions_ended=0, conversations_gone=0)
    assert redis.zrange(keys.owner_conversations("guest:sweep"), 0, -1) == [alive]


def test_admin_pages_list_every_conversation_once(server_redis, lifetimes):
    made = {chat_in(server_redis, f"guest:g{n % 3}", lifetimes) for n in range(25)}
    listed, cursor = [], 0
    for _ in range(50):
        page = listing.list_conversations(server_redis, cursor, page_size=4)
        listed += [row.id for row in page.rows]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(listed) == sorted(made)
    assert all(row.size_bytes > 0 and row.message_count == 1 for row in page.rows)


def test_overview_counts_every_state(server_redis, lifetimes):
    active = chat_in(server_redis, "guest:a", lifetimes)
    expired = chat_in(server_redis, "guest:a", lifetimes)
    parked = chat_in(server_redis, "guest:b", lifetimes)
    expiry.end_session(server_redis, expired)
    resume_codes.park(
        server_redis, SECRET, conversations.get_conversation(server_redis, parked), ttl=600
    )
    assert listing.count_states(server_redis) == {"active": 1, "parked": 1, "expired": 1}
    assert {row.id: row.state for row in listing.list_conversations(server_redis).rows} == {
        active: "active",
        expired: "expired",
        parked: "parked",
    }


def test_clearing_a_conversation_deletes_its_keys_codes_and_references(server_redis, lifetimes):
    r, owner = server_redis, "guest:clear"
    kept = chat_in(r, owner, lifetimes)
    cleared = chat_in(r, owner, lifetimes)
    earlier = runs.start_run(r, cleared, owner, lifetimes, SETTINGS, user_message=user_message())
    runs.add_chunk(r, earlier, "Tides come", SETTINGS)
    runs.finish_run(r, earlier, runs.DONE, lifetimes, SETTINGS)  # its events linger a while
    run = runs.start_run(r, cleared, owner, lifetimes, SETTINGS, user_message=user_message("More"))
    runs.add_chunk(r, run, "Partly", SETTINGS)
    conversations.save_draft(r, cleared, "half a thought")
    resume_codes.park(r, SECRET, conversations.get_conversation(r, cleared), ttl=600)
    result = audit.clear_conversation(r, cleared, "root")
    assert result.conversations == 1
    # meta, messages, session, recent ids, draft, run, codes, runs, both runs' events, the code
    assert result.keys == 11
    assert not list(r.scan_iter(match=keys.conversation_keys_pattern(cleared)))
    assert not list(r.scan_iter(match=keys.RESUME_CODES_PATTERN))
    assert r.zrange(keys.owner_conversations(owner), 0, -1) == [kept]
    assert r.zrange(keys.RUNS_RUNNING, 0, -1) == []
    assert conversations.get_conversation(r, kept) is not None


def test_clearing_an_owner_and_the_expired_leaves_the_rest(server_redis, lifetimes):
    mine = [chat_in(server_redis, "guest:mine", lifetimes) for _ in range(3)]
    theirs = chat_in(server_redis, "guest:theirs", lifetimes)
    old = chat_in(server_redis, "guest:old", lifetimes)
    server_redis.delete(keys.conversation_session(old))
    assert audit.clear_owner(server_redis, "guest:mine", "root").conversations == 3
    assert all(conversations.get_conversation(server_redis, cid) is None for cid in mine)
    assert audit.clear_expired(server_redis, "root").conversations == 1
    assert [row.id for row in listing.list_conversations(server_redis).rows] == [theirs]
    assert [entry.action for entry in audit.audit_entries(server_redis)] == [
        "clear expired",
        "clear owner",
    ]


def test_a_resume_code_parks_then_redeems_once(redis, lifetimes):
    conversation_id = chat_in(redis, "guest:away", lifetimes)
    conversation = conversations.get_conversation(redis, conversation_id)
    first = resume_codes.park(redis, SECRET, conversation, ttl=600)
    second = resume_codes.park(redis, SECRET, conversation, ttl=600)
    retired = resume_codes.look_up(SECRET, first.code)
    with pytest.raises(resume_codes.CodeRefused, match=resume_codes.USED):
        resume_codes.redeem_for(redis, retired, "guest:away", lifetimes)
    digest = resume_codes.look_up(SECRET, second.code)
    assert resume_codes.redeem_for(redis, digest, "guest:away", lifetimes) == conversation_id
    with pytest.raises(resume_codes.CodeRefused, match=resume_codes.USED):
        resume_codes.redeem_for(redis, digest, "guest:away", lifetimes)


def parked(redis, conversation_id) -> str:
    """Park the conversation under a new code; the code's hash."""
    conversation = conversations.get_conversation(redis, conversation_id)
    return resume_codes.look_up(SECRET, resume_codes.park(redis, SECRET, conversation, 600).code)


def redeemed_by(redis, conversation_id, visitor, lifetimes, code_owner=None):
    """Park the conversation under a code, and redeem that code for ``visitor``: as the code
    says, its owner is ``code_owner`` (by default the conversation's)."""
    digest = parked(redis, conversation_id)
    if code_owner:
        redis.hset(keys.resume_code(digest), "owner", code_owner)
    return resume_codes.redeem_for(redis, digest, visitor, lifetimes)


def test_giving_and_moving_conversations_between_owners(redis, lifetimes):
    given = chat_in(redis, "guest:first", lifetimes)
    moved = [chat_in(redis, "guest:later", lifetimes) for _ in range(3)]
    assert redeemed_by(redis, given, "user:u1", lifetimes) == given
    assert conversations.move_conversations(redis, "guest:later", "user:u1") == 3
    listed = {c.id for c in conversations.list_conversations(redis, "user:u1")}
    assert listed == {given, *moved}
    assert conversations.list_conversations(redis, "guest:first") == []
    assert conversations.list_conversations(redis, "guest:later") == []
    assert listing.count_states(redis) == {"active": 4, "parked": 0, "expired": 0}
    assert redis.hget(keys.DEADLINES_OWNERS, given) == "user:u1"
    # An old owner's index entry whose removal was lost lists nothing it no longer owns.
    redis.zadd(keys.owner_conversations("guest:first"), {given: time.time()})
    assert conversations.list_conversations(redis, "guest:first") == []


def test_a_code_for_a_conversation_that_changed_hands_moves_no_index_entry(redis, lifetimes):
    conversation_id = chat_in(redis, "guest:now", lifetimes)
    # The code says the conversation was guest:before's: it changed hands since it was issued.
    redeemed_by(redis, conversation_id, "user:u2", lifetimes, code_owner="guest:before")
    assert conversations.get_conversation(redis, conversation_id).owner == "guest:now"
    assert [c.id for c in conversations.list_conversations(redis, "guest:now")] == [conversation_id]
    assert conversations.list_conversations(redis, "user:u2") == []


def resumed_by_hand(r, lifetimes):
    """A conversation of guest:away parked under a code; its id, the code's hash, and a
    function that runs the resume's script as a redemption by ``visitor`` would."""
    conversation_id = chat_in(r, "guest:away", lifetimes)
    digest = parked(r, conversation_id)
    lives = [lifetimes.session_idle, lifetimes.session_max, lifetimes.transcript_retention]

    def resume(visitor):
        return RESUME_PARKED_SESSION.run(
            r, keys.conversation_keys(conversation_id), [digest, *lives, "guest:away", visitor]
        )

    return conversation_id, digest, resume


def test_a_resume_sent_again_stands_for_its_visitor_only(redis, lifetimes):
    _, _, resume = resumed_by_hand(redis, lifetimes)
    assert resume("user:u1") == [1, 1]
    assert resume("user:u1") == [2, 1]  # sent again, its answer lost: it resumed already
    assert resume("user:u2") == [0, 0]  # anyone else: the code was used


def test_a_cluster_settles_a_resume_whose_answer_was_lost_once_it_is_sent_again(
    cluster_redis, lifetimes
):
    conversation_id, digest, resume = resumed_by_hand(cluster_redis, lifetimes)
    resume("user:u1")  # it ran, but its answer, and so the settling after it, was lost
    assert resume_codes.redeem_for(cluster_redis, digest, "user:u1", lifetimes) == conversation_id
    listed = conversations.list_conversations(cluster_redis, "user:u1")
    assert [c.id for c in listed] == [conversation_id]
    assert conversations.list_conversations(cluster_redis, "guest:away") == []
    assert cluster_redis.hget(keys.DEADLINES_OWNERS, conversation_id) == "user:u1"
    assert cluster_redis.hget(keys.METRICS_COUNTERS, metrics.REDEEMED_FIELD) == "1"


def settled(r, conversation_id, owners):
    """What a redemption settles, told apart from the clock: each owner's index entry for
    the conversation ("now" if scored within the last minute, else its score kept), each
    deadline mirror's entry (seconds from now, to the nearest 10, or the owner it names),
    the redemptions counted and the owner the conversation has."""
    now = time.time()

    def entry(score):
        if score is None:
            return None
        return "now" if now - 60 < score <= now else score

    mirrors = {}
    for mirror in keys.DEADLINES:
        if mirror == keys.DEADLINES_OWNERS:
            mirrors[mirror] = r.hget(mirror, conversation_id)
        else:
            score = r.zscore(mirror, conversation_id)
            mirrors[mirror] = None if score is None else round((score - now) / 10) * 10
    return (
        {
            owner: entry(r.zscore(keys.owner_conversations(owner), conversation_id))
            for owner in owners
        },
        mirrors,
        r.hget(keys.METRICS_COUNTERS, metrics.REDEEMED_FIELD),
        conversations.get_conversation(r, conversation_id).owner,
    )


@pytest.mark.parametrize(
    "visitor, code_owner",
    [("guest:same", None), ("user:u1", None), ("user:u2", "guest:before")],
    ids=["its owner", "another owner", "a code from before it changed hands"],
)
def test_a_redemption_settles_the_same_on_one_server_as_on_a_cluster(
    real_redis, cluster_redis, lifetimes, visitor, code_owner
):
    # One server settles a redemption in the resume's own script, a cluster in a second
    # round trip: the two must leave the indexes, the mirrors and the counters alike.
    outcomes = []
    for r in (real_redis, cluster_redis):
        conversation_id = chat_in(r, "guest:same", lifetimes)
        r.zadd(keys.owner_conversations("guest:same"), {conversation_id: 1000})  # an old score
        redeemed_by(r, conversation_id, visitor, lifetimes, code_owner)
        outcomes.append(settled(r, conversation_id, {"guest:same", visitor, "guest:before"}))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2] == "1"


def test_a_fork_is_a_conversation_of_its_own(redis, lifetimes):
    original = chat_in(redis, "guest:fork", lifetimes, "first")
    conversations.append_message_and_touch(
        redis, original, "guest:fork", user_message("second"), lifetimes
    )
    fork = conversations.fork_conversation(redis, original, "guest:fork", 0, lifetimes)
    assert [m.content for m in conversations.read_messages(redis, fork)] == ["first"]
    assert len(conversations.list_conversations(redis, "guest:fork")) == 2


def test_accounts_log_in_and_sign_out_everywhere(redis):
    user = accounts.register(redis, "ada", PASSWORD)
    assert accounts.authenticate(redis, "Ada", PASSWORD, "127.0.0.1", NO_ADDRESS_LIMIT) == user
    tokens = [accounts.start_login(redis, user, 600) for _ in range(2)]
    assert accounts.user_of_login(redis, user.id, tokens[0]) == user
    assert accounts.sign_out_everywhere(redis, user.id) == 2
    assert accounts.user_of_login(redis, user.id, tokens[1]) is None


def test_counters_and_hourly_failures_add_up(redis):
    now = time.time()
    metrics.count_resume_failure(redis, "unknown", now)
    metrics.count_resume_failure(redis, "used", now - metrics.HOUR)
    metrics.count_messages_appended(redis, "user", 3)
    assert metrics.read_counters(redis) == {
        "resume_failures:unknown": 1,
        "resume_failures:used": 1,
        "messages_appended:user": 3,
    }
    assert [hour.count for hour in metrics.resume_failures_by_hour(redis, 3, now)] == [0, 1, 1]


# What only a cluster shows.


def test_each_conversations_keys_live_on_one_master_and_conversations_spread(
    cluster_redis, redis_cluster, lifetimes
):
    for number in range(30):
        conversation_id = chat_in(cluster_redis, f"guest:g{number}", lifetimes)
        run = runs.start_run(
            cluster_redis,
            conversation_id,
            f"guest:g{number}",
            lifetimes,
            SETTINGS,
            user_message=user_message(),
        )
        runs.add_chunk(cluster_redis, run, "Tides", SETTINGS)
        conversations.save_draft(cluster_redis, conversation_id, "more")
    masters_by_conversation = defaultdict(set)
    slots_by_conversation = defaultdict(set)
    for number, master in enumerate(redis_cluster.node_clients()):
        for key in master.scan_iter(match=keys.CONVERSATION_KEYS_PATTERN):
            conversation_id = keys.conversation_id_of(key)
            masters_by_conversation[conversation_id].add(number)
            slots_by_conversation[conversation_id].add(master.cluster("KEYSLOT", key))
    assert len(masters_by_conversation) == 30
    assert all(len(slots) == 1 for slots in slots_by_conversation.values())
    spread = set().union(*masters_by_conversation.values())
    assert spread == {0, 1, 2}, "every master holds some conversations"


def test_a_master_that_lost_its_scripts_is_given_them_again(cluster_redis, lifetimes):
    conversation_id = chat_in(cluster_redis, "guest:noscript", lifetimes)
    owning = cluster_redis.get_node_from_key(keys.conversation_meta(conversation_id))
    node = cluster_redis.get_redis_connection(owning)
    node.script_flush()  # as after a restart, or a replica promoted without them
    assert node.script_exists(APPEND_MESSAGE_AND_TOUCH.sha) == [False]
    assert conversations.append_message_and_touch(
        cluster_redis, conversation_id, "guest:noscript", user_message("again"), lifetimes
    )
    assert node.script_exists(*(script.sha for script in ALL_SCRIPTS)) == [True] * len(ALL_SCRIPTS)


def test_scripts_that_ran_on_other_masters_are_not_run_twice_after_noscript(
    cluster_redis, lifetimes
):
    moving = [chat_in(cluster_redis, "guest:before", lifetimes) for _ in range(12)]
    masters = {cluster_redis.get_node_from_key(keys.conversation_meta(cid)).name for cid in moving}
    assert len(masters) > 1, "the conversations should span masters"
    one = cluster_redis.get_node_from_key(keys.conversation_meta(moving[0]))
    cluster_redis.get_redis_connection(one).script_flush()
    assert conversations.move_conversations(cluster_redis, "guest:before", "user:after") == 12
    listed = {c.id for c in conversations.list_conversations(cluster_redis, "user:after")}
    assert listed == set(moving)


@pytest.fixture
def cluster_app(redis_cluster, tmp_path):
    """The app on the cluster through REDIS_CLUSTER, its rate limits kept there too."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "REDIS_URL": redis_cluster.url,
            "REDIS_CLUSTER": True,
            "OFFLINE_CHUNK_DELAY_SECONDS": 0,
            **OUT_OF_REACH,
        }
    )
    app.instance_path = str(tmp_path)
    yield app
    app.extensions["run_worker"].shutdown()
    redis_cluster.flush()


def test_the_app_chats_on_a_cluster_with_the_setting(cluster_app):
    assert isinstance(cluster_app.extensions["redis"], RedisCluster)
    assert isinstance(cluster_app.extensions["redis_blocking"], RedisCluster)
    r = cluster_app.extensions["redis"]
    chat = Chat(cluster_app.test_client())
    conversation_id = chat.start_conversation("Hello, cluster")
    assert chat.send(conversation_id, "And again").status_code == 302
    assert chat.wait_for_reply(conversation_id) == runs.DONE
    run = runs.latest_run(r, conversation_id)
    text, end = watch(chat.client, conversation_id, run.id)  # a blocking XREAD on its master
    assert end["status"] == runs.DONE
    assert text == conversations.read_messages(r, conversation_id)[-1].content
    page = chat.client.get(f"/c/{conversation_id}").text
    assert "Hello, cluster" in page and "And again" in page
    assert f"/c/{conversation_id}" in chat.client.get("/").text
    code = issue_code(chat.client, conversation_id)
    other_browser = cluster_app.test_client()
    redeemed = enter_code(other_browser, code)
    assert redeemed.status_code == 302 and conversation_id in redeemed.location
    assert f"/c/{conversation_id}" in other_browser.get("/").text
    assert f"/c/{conversation_id}" not in chat.client.get("/").text
    assert chat.client.get("/readyz").status_code == 200
