"""R2: ``kill -9`` of the Redis server (AOF, appendfsync everysec) while guests keep sending,
then a restart on the same port and data folder. Nothing acknowledged is lost, nothing sent
during the crash is falsely acknowledged, and the app, never restarted, recovers by itself."""

import threading
import time

from tests.chaos.conftest import Answer, Crowd, Guest, Ledger, Sent, assert_ledger_stored, send_path
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
    guests = [Guest(app.url) for _ in range(WRITERS)]
    ledger = Ledger()
    answers: list[tuple[int, Answer]] = []
    """(writer, answer), for every request the writers sent."""
    acknowledged_by = [0] * WRITERS
    lock = threading.Lock()

    def keep(number: int, answer: Answer) -> Answer:
        with lock:
            answers.append((number, answer))
        return answer

    def every_answer() -> list[Answer]:
        with lock:
            return [answer for _, answer in answers]

    def write(number: int, stop) -> None:
        """Load the form and send it; until it is acknowledged, send the same form again (a
        user pressing Send again, the page keeping the text), whatever the answer."""
        guest = guests[number]
        conversation_id = None
        count = 0
        while not stop.is_set():
            page_path, action = send_path(conversation_id)
            page = keep(number, guest.request(page_path))
            if page.status != 200:
                stop.wait(RESEND_PAUSE_SECONDS)
                continue
            fields = page.form_fields()
            text = f"Writer {number}, message {count}"
            ledger.attempt(fields["message_id"])
            while not stop.is_set():
                answer = keep(number, guest.request(action, {**fields, "text": text}))
                if answer.status == 302:
                    conversation_id = answer.location.rsplit("/", 1)[-1]
                    ledger.acknowledge(Sent(conversation_id, fields["message_id"], text))
                    acknowledged_by[number] += 1
                    count += 1
                    break
                # 409 while the previous reply is being written; 503 while Redis is down.
                stop.wait(RESEND_PAUSE_SECONDS)

    with Crowd(write, WRITERS) as crowd:
        crowd.wait_for(
            lambda: len(ledger.acknowledged) >= ACKNOWLEDGED_BEFORE_CRASH,
            f"{ACKNOWLEDGED_BEFORE_CRASH} messages acknowledged",
            TIMEOUT_SECONDS,
        )
        killed_at = time.monotonic()
        own_redis.kill()

        def met_the_crash() -> bool:
            """Every writer was refused since the kill, and some message was."""
            with lock:
                refused = [
                    (n, a) for n, a in answers if a.status == 503 and a.answered_at >= killed_at
                ]
            return len({n for n, _ in refused}) == WRITERS and any(
                a.method == "POST" for _, a in refused
            )

        # Down until every writer has met the crash: sending goes on meanwhile.
        crowd.wait_for(met_the_crash, "every writer to meet the crash", TIMEOUT_SECONDS)
        own_redis.start()  # same port, same data folder
        restarted_at = time.monotonic()
        before_restart = list(acknowledged_by)
        crowd.wait_for(
            lambda: all(
                now - before >= ACKNOWLEDGED_AFTER_RESTART
                for now, before in zip(acknowledged_by, before_restart, strict=True)
            ),
            f"every writer to get {ACKNOWLEDGED_AFTER_RESTART} more messages acknowledged",
            TIMEOUT_SECONDS,
        )
    assert not crowd.errors, "\n".join(crowd.errors)

    # The app recovered by itself: the same processes serve on.
    assert app.running and app.starts == 1, app.output()

    # No acknowledged message was lost, or stored twice (a form sent again is stored once).
    assert_ledger_stored(own_redis_client, ledger)

    # Sends that met the crash got the error page, never a 302.
    answered = every_answer()
    posts = [a for a in answered if a.method == "POST"]
    expected = {"GET": {200, 503}, "POST": {302, 409, 503}}
    unexpected = [a for a in answered if a.status not in expected[a.method]]
    assert not unexpected, "\n".join(map(str, unexpected))
    refused = [a for a in answered if a.status == 503]
    assert all(a.right_back for a in refused), "\n".join(
        str(a) for a in refused if not a.right_back
    )
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
