"""``resume-chat serve`` as a child process, for the tests and benchmarks that need the real
server. Failures raise AppServerError, with the app's output in the message."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from webapp.storage.embedded import free_port

TEST_SECRET_KEY = "test-secret-key"
START_TIMEOUT_SECONDS = 20
STOP_TIMEOUT_SECONDS = 15


class AppServerError(RuntimeError):
    """The app would not start or stop; the message ends with what it printed."""


class AppServer:
    """``resume-chat serve`` as a child process; stop and start it again on the same port."""

    def __init__(
        self,
        redis_url: str | None,
        instance_path: Path,
        log_path: Path,
        workers: int = 1,
        env: dict[str, str] | None = None,
        threads: int = 4,
    ) -> None:
        """With ``redis_url`` None the app starts its embedded server under ``instance_path``.

        ``env`` is set in the app's environment on top of the test defaults, e.g.
        ``{"ANTHROPIC_API_KEY": "test-key", "FLASK_RUN_STALE_SECONDS": "1"}``: the only way
        to give it FLASK_ and ANTHROPIC_ settings, which are never taken from the caller's.
        """
        self.redis_url = redis_url
        self.env = dict(env or {})
        self.instance_path = instance_path
        self.log_path = log_path
        self.workers, self.threads = workers, threads
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _environment(self) -> dict:
        env = {
            name: value
            for name, value in os.environ.items()
            # Nothing from the caller's shell may change the app's settings or pick a model.
            if not name.startswith(("FLASK_", "ANTHROPIC_")) and name not in ("REDIS_URL", "PORT")
        }
        env.update(
            FLASK_SECRET_KEY=TEST_SECRET_KEY,
            FLASK_INSTANCE_PATH=str(self.instance_path),
            PYTHONUNBUFFERED="1",
        )
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update(self.env)
        return env

    def start(self) -> None:
        """Start the app and return once GET /healthz answers 200."""
        if self.running:
            raise RuntimeError("the app is already running")
        executable = Path(sys.executable).with_name("resume-chat")
        if not executable.exists():
            raise AppServerError(f"{executable} is missing: install the project with `make test`")
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"\n===== start #{self.starts} on port {self.port} =====\n")
            log.flush()
            self.process = subprocess.Popen(
                [
                    str(executable), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", str(self.workers), "--threads", str(self.threads),
                ],
                env=self._environment(),
                cwd=self.instance_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so that teardown can end the master and its workers.
                start_new_session=True,
            )  # fmt: skip
        self._wait_until_healthy()

    def _workers_ready(self) -> int:
        """How many workers said "Worker ready" since the latest start."""
        latest_start = self.output().rsplit("===== start #", 1)[-1]
        return latest_start.count("Worker ready")

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AppServerError(
                    f"the app exited with status {self.process.returncode} while starting:\n"
                    + self.output()
                )
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    # Every worker must be up: a signal sent while one still boots makes
                    # gunicorn exit with "Worker failed to boot".
                    if response.status == 200 and self._workers_ready() >= self.workers:
                        return
                    last_error = f"HTTP {response.status}, {self._workers_ready()} workers ready"
            except (urllib.error.URLError, OSError) as error:
                last_error = str(error)
            time.sleep(0.05)
        self.kill()
        raise AppServerError(
            f"the app did not answer {self.url}/healthz within {START_TIMEOUT_SECONDS} s "
            f"(last: {last_error}); its output:\n{self.output()}"
        )

    def stop(self, signal_number: int = signal.SIGTERM) -> int:
        """SIGTERM (as a process manager would) or SIGINT (Ctrl-C); wait for a graceful exit
        and return the exit status."""
        if not self.running:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal_number)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AppServerError(
                f"the app did not stop within {STOP_TIMEOUT_SECONDS} s of SIGTERM; "
                f"its output:\n{self.output()}"
            ) from None
        return self.process.returncode

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the app's process group (the gunicorn master and its workers)."""
        # Only while the master is not yet reaped: its id (and group) cannot belong to another.
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def output(self) -> str:
        """What the app printed so far (all starts), for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-20_000:]
        except FileNotFoundError:
            return "(no output)"


@contextlib.contextmanager
def serving(redis_url: str | None, instance_path: Path, **options):
    """An AppServer (``options`` as its constructor's) started for the ``with`` block, and
    stopped, or killed, whatever happens in it."""
    instance_path.mkdir(parents=True, exist_ok=True)
    server = AppServer(redis_url, instance_path, instance_path / "app.log", **options)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.kill()
