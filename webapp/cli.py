"""The ``resume-chat`` command: serve the app, make an admin, repair what a count follows."""

import gc
import os
import signal

import click
from gunicorn.app.base import BaseApplication

from webapp import (
    INSTANCE_PATH,
    accounts,
    config,
    conversations,
    create_app,
    deadlines,
    runs,
    start_embedded_redis,
)
from webapp.config import DEFAULTS
from webapp.storage import get_redis


@click.group()
def main() -> None:
    """Resume Chat: chat with Claude where no conversation is ever silently lost."""


class GunicornServer(BaseApplication):
    """Gunicorn as `resume-chat serve` runs it: threaded workers, each with its own app from
    ``make_app``, its start-up frozen from the garbage collector, and ``when_worker_ready``
    called in each worker once it can serve."""

    def __init__(self, make_app, bind: str, workers: int, threads: int, when_worker_ready) -> None:
        self.make_app = make_app
        self.when_worker_ready = when_worker_ready
        self.options = {
            "bind": bind,
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "accesslog": "-",
            # Several instances may run on one machine; none needs the control socket.
            "control_socket_disable": True,
            # Forwarded headers are the app's to trust (TRUSTED_PROXIES, through ProxyFix):
            # gunicorn itself believes none, not even from loopback, so with no proxy
            # configured no header changes the scheme or the address.
            "forwarded_allow_ips": "",
            "secure_scheme_headers": {},
            "post_worker_init": self._worker_ready,
        }
        super().__init__()

    def _worker_ready(self, worker) -> None:
        """What the worker has loaded by now (the app, its libraries, the SDK's models)
        lives as long as the worker, so it is taken out of the garbage collector's reach: a
        full collection then walks only what requests made since, about 1 ms instead of 50
        to 100 ms with the GIL held, a pause every request in the worker waited through."""
        gc.freeze()
        self.when_worker_ready(worker)

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self):
        return self.make_app()


def _when_worker_ready(worker) -> None:
    """Gunicorn hook, in each worker once it can serve: on SIGTERM (a graceful stop) and on
    SIGINT or SIGQUIT (at once), first mark the worker's running replies interrupted, partial
    text kept, and let watchers go; then stop as gunicorn would."""
    for signum, stop in (
        (signal.SIGTERM, worker.handle_exit),
        (signal.SIGINT, worker.handle_quit),
        (signal.SIGQUIT, worker.handle_quit),
    ):

        def handle(signum, frame, stop=stop):
            worker.wsgi.extensions["run_worker"].shutdown()
            stop(signum, frame)

        signal.signal(signum, handle)
    worker.log.info(
        "Worker ready (pid: %s; %s objects kept from the garbage collector)",
        worker.pid,
        gc.get_freeze_count(),
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, envvar="PORT", default=5000, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="Processes.")
@click.option(
    "--threads", type=int, default=8, show_default=True, help="Threads serving pages, per process."
)
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the app with a production WSGI server (gunicorn, threaded workers). Each process
    has STREAMS_PER_PROCESS threads more for the event streams (see watchers)."""
    if not os.environ.get("REDIS_URL") and not os.environ.get("FLASK_REDIS_SENTINELS"):
        # Started once here, before the workers fork, so that they all share it.
        os.environ["REDIS_URL"] = start_embedded_redis(str(INSTANCE_PATH))
        click.echo(f"Embedded Redis at {os.environ['REDIS_URL']}, data in {INSTANCE_PATH}/redis")
    click.echo(f"Resume Chat on http://{host}:{port}")
    streams = int(os.environ.get("FLASK_STREAMS_PER_PROCESS", DEFAULTS["STREAMS_PER_PROCESS"]))
    GunicornServer(
        create_app, f"{host}:{port}", workers, threads + streams, _when_worker_ready
    ).run()


@main.command("create-admin")
@click.argument("username")
def create_admin(username: str) -> None:
    """Make USERNAME an admin (creating the account if needed), with a password read from a
    prompt or, when piped, from the first line of standard input."""
    if click.get_text_stream("stdin").isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = click.get_text_stream("stdin").readline().rstrip("\n")
    app = create_app(background=False)
    with app.app_context():
        r = get_redis()
        try:
            user = accounts.find_user(r, username)
            if user is None:
                user = accounts.register(r, username, password)
            else:
                accounts.set_password(r, user, password)
        except accounts.AccountRejected as error:
            raise click.ClickException(str(error)) from error
        accounts.make_admin(r, user)
    click.echo(f"{username} is an admin.")


@main.command()
def repair() -> None:
    """Recount from scratch, walking every conversation with SCAN (never KEYS; it costs in
    proportion to what is stored, so it is run by an operator, never by a request): mirror
    every deadline afresh (the counts by state and the sweeps follow them), remove index
    entries whose conversation is gone, and list every running reply for the reaper again."""
    app = create_app(background=False)
    with app.app_context():
        r = get_redis()
        live = deadlines.rebuild(r, config.current().lifetimes)
        removed = conversations.sweep_indexes(r)
        relisted = runs.list_running_again(r)
    click.echo(
        f"Mirrored {live.conversations} conversations ({live.sessions} with a session, "
        f"{live.parked} parked); removed {removed} stale index "
        f"entr{'y' if removed == 1 else 'ies'}; listed {relisted} running "
        f"repl{'y' if relisted == 1 else 'ies'}."
    )
