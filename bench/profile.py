"""`python -m bench.profile page|redeem`: where the app's workers spend their CPU under wrk.

py-spy samples the gunicorn workers (only the thread holding the GIL, so waiting on a
socket is left out) while wrk loads the conversation page (P2) or POSTs resume codes (P5)
at 8 connections; prints the functions with the most samples, on their own and with what
they call. Needs py-spy (`pip install -e '.[bench]'`) and wrk.
"""

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench import page, redemption
from bench.load import run_wrk
from tests.app_server import AppServer, serving
from webapp.storage.embedded import EmbeddedRedis

CONNECTIONS = 8
SAMPLES_PER_SECOND = 200
SHOWN = 40
STOP_TIMEOUT_SECONDS = 30


def summarise(raw: Path, shown: int = SHOWN) -> str:
    """The collapsed stacks of ``py-spy record --format raw`` as two top lists."""
    own, total, samples = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]  # the first is the process
        if not frames:
            continue
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)

    def top(counts: Counter) -> list[str]:
        return [f"{count / samples:6.1%}  {frame}" for frame, count in counts.most_common(shown)]

    return "\n".join(
        [
            f"{samples} samples of the workers holding the GIL",
            "on their own:",
            *top(own),
            "with what they call:",
            *top(total),
        ]
    )


def record(app: AppServer, out: Path, load) -> None:
    """py-spy on the app's workers while ``load()`` runs (stopped with Ctrl-C, as by hand,
    which writes its output)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    recording = subprocess.Popen(
        [
            py_spy, "record", "--pid", str(app.process.pid), "--subprocesses", "--gil",
            "--nonblocking", "--rate", str(SAMPLES_PER_SECOND), "--format", "raw",
            "--output", str(out),
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        load()
    finally:
        recording.send_signal(signal.SIGINT)
        recording.wait(timeout=STOP_TIMEOUT_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=("page", "redeem"))
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--shown", type=int, default=SHOWN, help="Functions in each list.")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resume-chat-profile-") as folder:
        data = Path(folder)
        server = EmbeddedRedis(data / "redis")
        url = server.start()
        secret = page.SECRET_KEY if options.target == "page" else redemption.SECRET_KEY
        env = {"FLASK_SECRET_KEY": secret}
        try:
            with serving(url, data / "app", workers=2, threads=8, env=env) as app:
                if options.target == "page":
                    cookie, owner = page.owners_cookie(app.url)
                    target = f"{app.url}/c/{page.fill_conversation(url, owner)}"
                    run_wrk(target, CONNECTIONS, 1, {"Cookie": cookie})

                    def load() -> None:
                        run_wrk(target, CONNECTIONS, options.seconds, {"Cookie": cookie})

                else:
                    redeeming = redemption.Redeeming(url, app, data)
                    redeeming.run(CONNECTIONS, 1)

                    def load() -> None:
                        redeeming.run(CONNECTIONS, options.seconds)

                record(app, data / "profile.txt", load)
                print(summarise(data / "profile.txt", options.shown))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
