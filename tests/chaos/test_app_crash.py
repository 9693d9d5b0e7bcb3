"""R1: ``kill -9`` of the whole app (gunicorn master and workers) while several guests chat
and Claude's replies are streaming. Restarted on the same port and Redis, the app has every
acknowledged message, reaps the cut replies as interrupted with their partial text, shows
them so, and Continue completes them. A cut reply nobody reaps is marked interrupted by the
first page that sees it stale, within RUN_STALE_SECONDS + 5 s of the restart."""

import time

from tests.chaos.conftest import (
    REPLY,
    TRANSPORT_ERRORS,
    WRITING_MARK,
    Crowd,
    Guest,
    Ledger,
    Sent,
    assert_ledger_stored,
    send_path,
)
from tests.test_run_processes import (
    REAPER_LOG_LINE,
    wait_for,
    wait_for_chunks,
    wait_for_new_run_to_end,
    wait_until_ended,
)
from webapp import conversations, runs
from webapp.llm import carry_on_request

GUESTS = 6
TOKEN_DELAY_SECONDS = 0.08
"""Between the fake's tokens: a reply takes about 3 s, so the kill lands mid-stream."""
REPLY_TOKENS = len(REPLY.split())
TOKENS_LEFT_AT_KILL = 8
"""The kill waits until no reply is this close to its end (about 0.6 s of tokens), so that
the replies being written are still being written when it lands."""
ROUNDS_BEFORE_KILL = 2
"""Acknowledged messages per guest, on average, before the kill."""
POLL_SECONDS = 0.2
KILL_TIMEOUT_SECONDS = 40
"""Bound of the wait for the moment to kill (normally a few seconds)."""


def test_kill_9_of_the_app_mid_reply_loses_nothing_and_replies_can_be_continued(
    launch_app, claude, own_redis_client
):
    r = own_redis_client
    claude.token_delay = TOKEN_DELAY_SECONDS
    app = launch_app(workers=3)
    guests = [Guest(app.url) for _ in range(GUESTS)]
    ledger = Ledger()
    owner_of: dict[str, Guest] = {}
    latest_of: dict[int, str] = {}
    """Each guest's conversation, once started."""

    def chat(number: int, stop) -> None:
        """Send a message, reload the page until its reply is written, send the next..."""
        guest = guests[number]
        conversation_id = None
        count = 0
        while not stop.is_set():
            page_path, action = send_path(conversation_id)
            try:
                page = guest.page(page_path)
                if page.writing:
                    stop.wait(POLL_SECONDS)
                    continue
                fields = page.form_fields()
                text = f"Guest {number}, message {count}"
                ledger.attempt(fields["message_id"])
                answer = guest.request(action, {**fields, "text": text})
            except TRANSPORT_ERRORS:
                if stop.is_set():
                    return  # cut by the kill: the test's own doing
                raise
            assert answer.status == 302, answer
            conversation_id = answer.location.rsplit("/", 1)[-1]
            ledger.acknowledge(Sent(conversation_id, fields["message_id"], text))
            owner_of[conversation_id] = guest
            latest_of[number] = conversation_id
            count += 1

    def every_reply_mid_stream() -> bool:
        """Each guest's latest reply is being written, with some text and some still to come."""
        if len(latest_of) < GUESTS or len(ledger.acknowledged) < ROUNDS_BEFORE_KILL * GUESTS:
            return False
        for conversation_id in list(latest_of.values()):
            run = runs.latest_run(r, conversation_id)
            if run is None or not run.running:
                return False
            written = len(runs.run_text(r, run)[0].split())  # words, not the thinking phase
            if not 1 <= written <= REPLY_TOKENS - TOKENS_LEFT_AT_KILL:
                return False
        return True

    with Crowd(chat, GUESTS) as crowd:
        crowd.wait_for(every_reply_mid_stream, "every reply mid-stream", KILL_TIMEOUT_SECONDS)
        crowd.stop.set()
        app.kill()
    assert not crowd.errors, "\n".join(crowd.errors)

    # The app is gone; what it acknowledged is in Redis already.
    assert_ledger_stored(r, ledger)
    cut = {}
    for conversation_id in ledger.conversation_ids():
        run = runs.latest_run(r, conversation_id)
        if run.running:
            cut[conversation_id] = (run, runs.run_text(r, run)[0])
    with_text = [c for c, (_, partial) in cut.items() if partial]
    assert with_text, "no reply with text was being written when the app was killed"

    app.start()  # same port, same Redis

    for conversation_id, (run, partial) in cut.items():
        ended = wait_until_ended(r, conversation_id, run.id)
        assert ended.status == runs.INTERRUPTED, ended
        wait_for(lambda: REAPER_LOG_LINE in app.output(), "the reaper's log line")
        assert runs.run_text(r, ended)[0] == partial, "the reply's text changed after the kill"
        last = conversations.read_messages(r, conversation_id)[-1]
        page = owner_of[conversation_id].page(f"/c/{conversation_id}")
        assert "This reply was interrupted" in page.body, page
        assert not page.writing, page
        if partial:
            assert REPLY.startswith(partial) and partial != REPLY, partial
            assert (last.id, last.role, last.content, last.status) == (
                run.message_id,
                "assistant",
                partial,
                runs.INTERRUPTED,
            )
            assert partial.strip() in page.body, "the page does not show the partial reply"
            assert {"Continue", "Retry"} <= page.buttons().keys(), page
        else:  # its message was stored just before the kill, before a word was written
            assert last.role == "user", last
            assert "Retry" in page.buttons() and "Continue" not in page.buttons(), page
    assert_ledger_stored(r, ledger)

    requests_before = len(claude.message_requests)
    for conversation_id, (_, partial) in cut.items():
        answer = owner_of[conversation_id].press(
            conversation_id, "Continue" if partial else "Retry"
        )
        assert answer.status == 302, answer
    for conversation_id, (run, _) in cut.items():
        done = wait_for_new_run_to_end(r, conversation_id, run.id)
        assert done.status == runs.DONE, done
        assert done.message_id == run.message_id
        page = owner_of[conversation_id].page(f"/c/{conversation_id}")
        assert "This reply was interrupted" not in page.body

    # Continue carried on from the partial text, sent as an assistant turn followed by a user
    # turn asking to carry on (no prefill: every request ends with a user turn).
    continued = []
    for request in claude.message_requests[requests_before:]:
        *_, before_last, last = [{"role": ""}, *request.body["messages"]]
        assert last["role"] == "user", request.body
        if before_last["role"] == "assistant" and last["content"] == carry_on_request(
            before_last["content"]
        ):
            continued.append(before_last["content"])
    assert sorted(continued) == sorted(partial.rstrip() for _, partial in cut.values() if partial)

    # Every conversation is now question, whole reply, question, whole reply...
    assert_ledger_stored(r, ledger)
    for conversation_id in ledger.conversation_ids():
        messages = conversations.read_messages(r, conversation_id)
        roles = [m.role for m in messages]
        assert roles == ["user", "assistant"] * (len(messages) // 2), roles
        replies = [(m.content, m.status) for m in messages if m.role == "assistant"]
        assert replies == [(REPLY, None)] * len(replies), replies
    print(
        f"\nR1: {GUESTS} guests, {len(ledger.acknowledged)} messages acknowledged, "
        f"{len(cut)} replies cut by kill -9 and interrupted ({len(with_text)} with partial text)"
    )


STALE_SECONDS = 6
"""Longer than a restart takes, so that the reaper's round at start-up finds nothing stale."""
SLACK_SECONDS = 5


def test_after_kill_9_the_page_shows_a_cut_reply_interrupted_once_it_is_stale(
    launch_app, claude, own_redis_client
):
    """No reaper marks it: its round at start-up comes before the reply is stale, and its
    next is an hour away. The page, reloaded as it reloads itself without script, ends the
    run itself once its heartbeat is RUN_STALE_SECONDS old: within RUN_STALE_SECONDS + 5 s
    of the restart."""
    r = own_redis_client
    claude.token_delay = TOKEN_DELAY_SECONDS
    app = launch_app(workers=1, RUN_STALE_SECONDS=STALE_SECONDS, RUN_REAPER_INTERVAL_SECONDS=3600)
    guest = Guest(app.url)
    fields = guest.page("/").form_fields()
    answer = guest.request("/", {**fields, "text": "Tell me how replies survive."})
    conversation_id = answer.location.rsplit("/", 1)[-1]
    run = wait_for(lambda: runs.latest_run(r, conversation_id), "the reply to start")
    wait_for_chunks(r, run, 4)
    app.kill()
    app.start()
    restarted = time.monotonic()

    def interrupted():
        page = guest.page(f"/c/{conversation_id}")
        return page if WRITING_MARK not in page.body else None

    page = wait_for(interrupted, "the page to show the reply ended", STALE_SECONDS + SLACK_SECONDS)
    seconds = time.monotonic() - restarted
    assert "This reply was interrupted" in page.body, page
    assert {"Continue", "Retry"} <= page.buttons().keys(), page
    assert runs.latest_run(r, conversation_id).status == runs.INTERRUPTED
    assert REAPER_LOG_LINE not in app.output(), "the reaper marked it, not the page"
    print(
        f"\nR1: interrupted shown {seconds:.1f} s after the restart (stale after {STALE_SECONDS} s)"
    )
