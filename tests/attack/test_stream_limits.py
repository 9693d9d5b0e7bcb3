"""Event streams held open can't starve the server: each owner holds a few at most, each
process a bounded number on threads of their own, and pages keep answering however many
are open. Over HTTP against the real server (gunicorn's threads are what is at stake)."""

import re
import urllib.error

import pytest

from tests.test_run_processes import Client, wait_for
from webapp import watchers

CHUNK_DELAY_SECONDS = 2
"""The offline model's reply (about 20 chunks) takes about 40 s: it is still being written
for the whole test."""
PER_OWNER, PER_PROCESS = 10, 110
"""More streams than redis-py's default pool of 100 connections: the pools are sized for
them."""


@pytest.fixture
def server(serve):
    """One process: 4 threads for pages, PER_PROCESS for streams."""
    return serve(
        OFFLINE_CHUNK_DELAY_SECONDS=CHUNK_DELAY_SECONDS,
        STREAMS_PER_OWNER=PER_OWNER,
        STREAMS_PER_PROCESS=PER_PROCESS,
    )


class Visitor(Client):
    """A guest with a reply being written, who can open streams of it."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.conversation_id = self.start_conversation("Tell me a long story, slowly.")
        page = self.get(f"/c/{self.conversation_id}")
        self.events = re.search(r'data-events="([^"]+)"', page)[1]

    def watch(self):
        """Open a stream of the reply: the response, held open (status 200), or the
        HTTPError it was refused with."""
        try:
            return self.open(self.events)
        except urllib.error.HTTPError as refused:
            return refused


def test_an_owner_holds_a_few_streams_at_most(server):
    visitor = Visitor(server.url)
    held = [visitor.watch() for _ in range(PER_OWNER)]
    assert [stream.status for stream in held] == [200] * PER_OWNER
    refused = visitor.watch()
    assert refused.status == 429
    assert Visitor(server.url).watch().status == 200  # another owner is not held up

    held.pop().close()  # a tab closed: its stream stops counting once the server notices
    reopened = wait_for(lambda: (s := visitor.watch()).status == 200 and s, "a stream again")
    reopened.close()
    for stream in held:
        stream.close()


def test_pages_answer_however_many_streams_are_open(server):
    visitors = [Visitor(server.url) for _ in range(PER_PROCESS // PER_OWNER)]
    held = [visitor.watch() for visitor in visitors for _ in range(PER_OWNER)]
    assert [stream.status for stream in held] == [200] * PER_PROCESS

    late = Visitor(server.url)  # pages, and a new conversation, are served
    # This process holds as many streams as it may: more are refused at once, each
    # giving its thread back.
    assert {late.watch().status for _ in range(4 * PER_PROCESS)} == {429}
    assert "Start a new chat" in late.get("/")
    assert "Log in" in late.get("/login")
    assert late.get("/healthz")
    for stream in held:
        stream.close()


def test_a_stream_whose_process_died_stops_counting_when_its_lease_ends(real_redis, monkeypatch):
    held = watchers.Watchers(real_redis, per_owner=1, per_process=10)
    held.open("guest:g1")  # never closed: its process was killed
    with pytest.raises(watchers.TooManyStreams):
        held.open("guest:g1")
    later = watchers.clock() + watchers.LEASE_SECONDS + 1
    monkeypatch.setattr(watchers, "clock", lambda: later)
    held.open("guest:g1").close()


def test_a_stream_that_goes_on_is_renewed_and_keeps_counting(real_redis, monkeypatch):
    held = watchers.Watchers(real_redis, per_owner=1, per_process=10)
    now = watchers.clock()
    monkeypatch.setattr(watchers, "clock", lambda: now)
    watch = held.open("guest:g1")
    for _ in range(5):  # five leases long, renewed as it goes
        now += watchers.LEASE_SECONDS / 2
        watch.renew()
        with pytest.raises(watchers.TooManyStreams):
            held.open("guest:g1")
    watch.close()
    held.open("guest:g1").close()


def test_a_process_holds_no_more_streams_than_it_may(real_redis):
    held = watchers.Watchers(real_redis, per_owner=10, per_process=2)
    first, _ = held.open("guest:a"), held.open("guest:b")
    with pytest.raises(watchers.TooManyStreams):
        held.open("guest:c")
    first.close()
    first.close()  # closing twice frees one slot, not two
    held.open("guest:c")
    with pytest.raises(watchers.TooManyStreams):
        held.open("guest:d")
