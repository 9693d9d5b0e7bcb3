"""Redis Sentinel: ``kill -9`` of the primary while guests chat. The sentinels promote its
replica, and the app, never restarted, finds the new primary by itself: pages answer again
as soon as the sentinels name it; messages are acknowledged again once a replica confirms
them, when the old primary, started again as a process manager would, has been made a
replica of the new one. Nothing acknowledged before, during or after is lost, and every
request that met the failover got the 503 page."""

import time

import pytest

from tests.app_server import serving
from tests.chaos.conftest import RUN_SETTINGS, Guest, Senders, assert_ledger_stored
from tests.chaos.test_redis_outage import worker_pids
from tests.sentinel_server import MASTER_NAME, LocalSentinel
from webapp.storage import connect
from webapp.storage.scripts import ALL_SCRIPTS

WRITERS = 4
RESEND_PAUSE_SECONDS = 0.1
ACKNOWLEDGED_BEFORE_KILL = 3 * WRITERS
ACKNOWLEDGED_AFTER_REJOIN = 2
"""Per writer: the app took its messages again, without being restarted."""
PAGE_BACK_SECONDS = 10
"""Bound of the wait for a page to answer 200 once the sentinels name the new primary
(normally well under a second)."""
RECOVERY_ALLOWANCE_SECONDS = 2
"""After the old primary is a replica again, within which a request may still have met the
failover."""
TIMEOUT_SECONDS = 40
"""Bound of each wait on the writers and the servers (normally a few seconds; the sentinels
make a restarted old primary a replica some ten seconds after it is up)."""
NOT_REPLICATED = "replicas confirmed within"
"""What the app logs when it refused a send that no replica confirmed (NotReplicated)."""


@pytest.fixture
def sentinel_group(tmp_path):
    """A primary and its replica (AOF on both), watched by three sentinels."""
    group = LocalSentinel(tmp_path / "redis").start()
    yield group
    group.stop()


def test_kill_9_of_the_primary_fails_over_and_loses_no_acknowledged_message(
    sentinel_group, tmp_path
):
    group = sentinel_group
    settings = {
        "REDIS_SENTINELS": group.setting,
        "REDIS_SENTINEL_MASTER": MASTER_NAME,
        "OFFLINE_CHUNK_DELAY_SECONDS": 0,
        **RUN_SETTINGS,
    }
    env = {f"FLASK_{name}": str(value) for name, value in settings.items()}
    with serving(None, tmp_path / "app", workers=2, env=env) as app:
        workers = worker_pids(app.process.pid)
        reader = Guest(app.url)
        first = reader.request("/", {**reader.page("/").form_fields(), "text": "Reading along"})
        assert first.status == 302, first
        reader_page = first.location
        reader.wait_until_written(reader_page.rsplit("/", 1)[-1])

        senders = Senders(app.url, WRITERS, RESEND_PAUSE_SECONDS)
        # The scripts are loaded on the primary only: the new one will answer NOSCRIPT first.
        replica = group.node_client(1 - group.primary())
        assert not any(replica.script_exists(*(script.sha for script in ALL_SCRIPTS)))

        with senders.crowd() as crowd:
            crowd.wait_for(
                lambda: len(senders.ledger.acknowledged) >= ACKNOWLEDGED_BEFORE_KILL,
                f"{ACKNOWLEDGED_BEFORE_KILL} messages acknowledged",
                TIMEOUT_SECONDS,
            )
            killing_at = time.monotonic()
            killed = group.kill_primary()
            killed_at = time.monotonic()
            crowd.wait_for(
                lambda: senders.all_refused_since(killed_at),
                "every writer to meet the kill",
                TIMEOUT_SECONDS,
            )
            promoted = group.wait_for_failover(killed, TIMEOUT_SECONDS)
            failed_over_at = time.monotonic()

            deadline = failed_over_at + PAGE_BACK_SECONDS
            while (page := reader.request(reader_page)).status != 200:
                assert page.right_back, page
                assert time.monotonic() < deadline, f"no page after {PAGE_BACK_SECONDS} s"
                time.sleep(0.05)
            page_back_at = time.monotonic()

            # Sends wait for a replica: the old primary, started again with its own data,
            # is made a replica of the new one by the sentinels.
            group.start_node(killed)
            restarted_at = time.monotonic()
            group.wait_for_replica(killed, TIMEOUT_SECONDS)
            rejoined_at = time.monotonic()
            before_rejoin = list(senders.acknowledged_by)
            crowd.wait_for(
                lambda: senders.each_acknowledged_more(before_rejoin, ACKNOWLEDGED_AFTER_REJOIN),
                f"every writer to get {ACKNOWLEDGED_AFTER_REJOIN} more messages acknowledged",
                TIMEOUT_SECONDS,
            )
        assert not crowd.errors, "\n".join(crowd.errors)

        # The app carried on by itself: the same master and workers serve on.
        assert app.running and app.starts == 1, app.output()
        assert worker_pids(app.process.pid) == workers
        # Sends that no replica could confirm were refused, not acknowledged.
        assert NOT_REPLICATED in app.log_path.read_text(), app.output()

    # No acknowledged message was lost, or stored twice, on the new primary.
    assert group.primary() == promoted
    r = connect(None, sentinels=group.addresses, sentinel_master=MASTER_NAME)
    ledger = senders.ledger
    assert_ledger_stored(r, ledger)

    answered = senders.answers()
    refused = senders.refusals()
    # Every page that was refused met the failover: answered after the kill began, sent
    # before the old primary was a replica again (plus the allowance). A send may be refused
    # at any time by design, should the replica be slower to confirm than REPLICA_WAIT_MS.
    outside = [
        a
        for a in refused
        if a.method == "GET"
        and (a.answered_at < killing_at or a.sent_at > rejoined_at + RECOVERY_ALLOWANCE_SECONDS)
    ]
    assert not outside, "\n".join(map(str, outside))
    # A message sent once the primary was dead was acknowledged only with a replica back.
    early = [
        a
        for a in answered
        if a.method == "POST"
        and a.status == 302
        and a.sent_at > killed_at
        and a.answered_at < restarted_at
    ]
    assert not early, "\n".join(map(str, early))
    refused_posts = [a for a in refused if a.method == "POST"]
    print(
        f"\nSentinel: {WRITERS} writers, {len(ledger.acknowledged)} messages acknowledged "
        f"({sum(before_rejoin)} before the old primary rejoined); failover "
        f"{failed_over_at - killed_at:.1f} s after the kill, a page 200 "
        f"{page_back_at - failed_over_at:.1f} s after that, the old primary a replica "
        f"{rejoined_at - restarted_at:.1f} s after its restart; {len(refused_posts)} sends and "
        f"{len(refused) - len(refused_posts)} page loads answered 503"
    )
