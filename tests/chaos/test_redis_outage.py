"""R3: Redis stopped for ten seconds while guests browse. Every page answers within two
seconds, with the friendly 503 while Redis is away; no worker dies; afterwards every page
answers 200 again, and the app was never restarted."""

import re
import threading
import time
from collections import Counter
from pathlib import Path

from tests.chaos.conftest import Answer, Crowd, Guest

BROWSERS = 6
OUTAGE_SECONDS = 10
PAGE_TIMEOUT_SECONDS = 2
"""The client gives up on a page after this (R3 of the bar in the README), which fails the test."""
RECOVERY_ALLOWANCE_SECONDS = 2
"""After Redis answers again, within which a request may still have met the outage."""
VISIT_PAUSE_SECONDS = 0.05
VISITS_EACH_SIDE = 2
"""Per guest and page, answered 200 before the outage and after the recovery allowance."""
TIMEOUT_SECONDS = 30
"""Bound of each wait on the guests (normally a few seconds)."""
CRASH_SIGNS = re.compile(r"Traceback|Worker exiting|WORKER TIMEOUT|Booting worker|Worker failed")
"""What gunicorn or Python print when a worker dies, is replaced, or a request blows up."""


def worker_pids(master_pid: int) -> set[int]:
    """The processes whose parent is ``master_pid`` (gunicorn's workers)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (command) state ppid ...": the command may hold spaces, so split after it.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == master_pid:
            children.add(int(stat.parent.name))
    return children


def test_pages_answer_503_within_2_s_while_redis_is_stopped_and_200_after(
    launch_app, claude, own_redis
):
    app = launch_app(workers=3)
    guests = [Guest(app.url, timeout=PAGE_TIMEOUT_SECONDS) for _ in range(BROWSERS)]
    paths = []
    for number, guest in enumerate(guests):
        answer = guest.request("/", {**guest.page("/").form_fields(), "text": f"Guest {number}"})
        assert answer.status == 302, answer
        guest.wait_until_written(answer.location.rsplit("/", 1)[-1])
        paths.append([answer.location, "/"])
    workers = worker_pids(app.process.pid)
    assert len(workers) == 3, workers
    log_start = app.log_path.stat().st_size

    visits: list[tuple[int, Answer]] = []
    """(guest, answer) for every page load."""
    lock = threading.Lock()

    def browse(number: int, stop) -> None:
        """Load the conversation page and the start page, again and again."""
        while not stop.is_set():
            for path in paths[number]:
                answer = guests[number].request(path)
                with lock:
                    visits.append((number, answer))
            stop.wait(VISIT_PAUSE_SECONDS)

    def answered_200_since(moment: float) -> bool:
        """Each guest's pages each answered 200 VISITS_EACH_SIDE times, sent after ``moment``."""
        with lock:
            fine = Counter(
                (n, a.path) for n, a in visits if a.status == 200 and a.sent_at >= moment
            )
        return all(fine[n, path] >= VISITS_EACH_SIDE for n in range(BROWSERS) for path in paths[n])

    with Crowd(browse, BROWSERS) as crowd:
        started_at = time.monotonic()
        crowd.wait_for(lambda: answered_200_since(started_at), "pages before", TIMEOUT_SECONDS)
        stopping_at = time.monotonic()
        own_redis.stop()
        stopped_at = time.monotonic()
        time.sleep(OUTAGE_SECONDS)  # the outage: the guests browse on meanwhile
        restarting_at = time.monotonic()
        own_redis.start()  # same port, same data folder
        restarted_at = time.monotonic()
        recovered_at = restarted_at + RECOVERY_ALLOWANCE_SECONDS
        crowd.wait_for(lambda: answered_200_since(recovered_at), "pages after", TIMEOUT_SECONDS)
    # A page slower than PAGE_TIMEOUT_SECONDS, or a refused connection, is an error here.
    assert not crowd.errors, "\n".join(crowd.errors)

    answers = [answer for _, answer in visits]
    unexpected = [a for a in answers if a.status not in (200, 503)]
    assert not unexpected, "\n".join(map(str, unexpected))
    refused = [a for a in answers if a.status == 503]
    assert all(a.right_back for a in refused), "\n".join(
        str(a) for a in refused if not a.right_back
    )
    # Every failure met the outage: answered after Redis began to stop, sent before it was
    # back (plus the allowance).
    outside = [a for a in refused if a.answered_at < stopping_at or a.sent_at > recovered_at]
    assert not outside, "\n".join(map(str, outside))
    # While Redis was down, nothing answered otherwise, and every guest's pages were tried.
    during = [
        (n, a) for n, a in visits if stopped_at <= a.sent_at and a.answered_at <= restarting_at
    ]
    assert all(a.status == 503 for _, a in during), "\n".join(
        str(a) for _, a in during if a.status != 503
    )
    tried = {(n, a.path) for n, a in during}
    assert tried == {(n, path) for n in range(BROWSERS) for path in paths[n]}, tried

    # Nothing crashed: the same master and workers serve on, and none complained.
    assert app.running and app.starts == 1, app.output()
    assert worker_pids(app.process.pid) == workers
    with app.log_path.open("rb") as log:
        log.seek(log_start)
        log_during = log.read().decode(errors="replace")
    assert not CRASH_SIGNS.search(log_during), log_during
    print(
        f"\nR3: {BROWSERS} guests, {len(answers)} page loads, {len(refused)} answered 503, "
        f"all within the outage ({len(during)} sent while Redis was down)"
    )
