"""R2: ``kill -9`` of the Redis server (AOF, appendfsync everysec) while guests keep sending,
then a restart on the same port and data folder. Nothing acknowledged is lost, nothing sent
during the crash is falsely acknowledged, and the app, never restarted, recovers by itself."""

import time

from tests.chaos.conftest import Senders, assert_ledger_stored
from webapp import conversations

WRITERS = 6
TOKEN_DELAY_SECONDS = 0.01
"""Short replies (under half a second), so that guests send often."""
RESEND_PAUSE_SECONDS = 0.1
ACKNOWLEDGED_BEFORE_CRASH = 3 * WRITERS
ACKNOWLEDGED_AFTER_RESTART = 2
"""Per writer: the app took its messages again, without being restarted."""
RECOVERY_ALLOWANCE_SECONDS = 2
"""After the restart, within which a request may still have met the crash."""
TIMEOUT_SECONDS = 40
"""Bound of each wait on the writers (normally a few seconds)."""


def test_kill_9_of_redis_mid_writes_loses_no_acknowledged_message(
    launch_app, claude, own_redis, own_redis_client
):
    claude.token_delay = TOKEN_DELAY_SECONDS
    app = launch_app(workers=3)
    senders = Senders(app.url, WRITERS, RESEND_PAUSE_SECONDS)
    with senders.crowd() as crowd:
        crowd.wait_for(
            lambda: len(senders.ledger.acknowledged) >= ACKNOWLEDGED_BEFORE_CRASH,
            f"{ACKNOWLEDGED_BEFORE_CRASH} messages acknowledged",
            TIMEOUT_SECONDS,
        )
        killed_at = time.monotonic()
        own_redis.kill()
        # Down until every writer has met the crash: sending goes on meanwhile.
        crowd.wait_for(
            lambda: senders.all_refused_since(killed_at),
            "every writer to meet the crash",
            TIMEOUT_SECONDS,
        )
        own_redis.start()  # same port, same data folder
        restarted_at = time.monotonic()
        before_restart = list(senders.acknowledged_by)
        crowd.wait_for(
            lambda: senders.each_acknowledged_more(before_restart, ACKNOWLEDGED_AFTER_RESTART),
            f"every writer to get {ACKNOWLEDGED_AFTER_RESTART} more messages acknowledged",
            TIMEOUT_SECONDS,
        )
    assert not crowd.errors, "\n".join(crowd.errors)

    # The app recovered by itself: the same processes serve on.
    assert app.running and app.starts == 1, app.output()

    # No acknowledged message was lost, or stored twice (a form sent again is stored once).
    ledger = senders.ledger
    assert_ledger_stored(own_redis_client, ledger)

    # Sends that met the crash got the error page, never a 302.
    posts = [a for a in senders.answers() if a.method == "POST"]
    refused = senders.refusals()
    outside = [
        a
        for a in refused
        if a.answered_at < killed_at or a.sent_at > restarted_at + RECOVERY_ALLOWANCE_SECONDS
    ]
    assert not outside, "\n".join(map(str, outside))
    refused_posts = [a for a in refused if a.method == "POST"]
    assert refused_posts
    interrupted = sum(
        m.status == "interrupted"
        for conversation_id in ledger.conversation_ids()
        for m in conversations.read_messages(own_redis_client, conversation_id)
    )
    print(
        f"\nR2: {WRITERS} writers, {len(ledger.acknowledged)} messages acknowledged "
        f"({sum(before_restart)} before the restart), {len(posts)} sends in all; during the "
        f"crash {len(refused_posts)} sends and {len(refused) - len(refused_posts)} page loads "
        f"answered 503; {interrupted} replies cut by the crash, reaped as interrupted"
    )
