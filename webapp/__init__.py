"""Resume Chat: chat with Claude where no conversation is ever silently lost."""

import atexit
import os
from pathlib import Path

from flask import Flask

from webapp import config, llm, rendering, security, storage
from webapp.replies import Replies
from webapp.run_worker import RunWorker
from webapp.storage.embedded import EmbeddedRedis
from webapp.views import admin as admin_views
from webapp.views import auth, chat, errors, identity, ops, resume
from webapp.views import exports as export_views
from webapp.views import search as search_views
from webapp.views import shares as share_views
from webapp.watchers import Watchers

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_PATH = Path(os.environ.get("FLASK_INSTANCE_PATH", PROJECT_ROOT / "instance"))


def create_app(test_config: dict | None = None, background: bool = True) -> Flask:
    """Build the app: settings, Redis, the model, security, blueprints. ``background``
    starts this process's heartbeats, reaper and sweeps (maintenance commands skip them)."""
    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
        instance_path=str(INSTANCE_PATH.resolve()),
    )
    config.load(app, test_config)
    if not app.config["REDIS_URL"] and not app.config["REDIS_SENTINELS"]:
        app.config["REDIS_URL"] = start_embedded_redis(app.instance_path)
    settings = app.extensions["settings"] = config.settings_of(app.config)
    storage.init_app(app)
    llm.init_app(app)
    r, provider = app.extensions["redis"], app.extensions["llm"]
    worker = app.extensions["run_worker"] = RunWorker(
        r,
        provider,
        settings.lifetimes,
        settings.runs,
        threads=int(app.config["RUN_THREADS"]),
        reaper_interval=float(app.config["RUN_REAPER_INTERVAL_SECONDS"]),
        sweep_interval=float(app.config["SWEEP_INTERVAL_SECONDS"]),
    )
    app.extensions["replies"] = Replies(
        r,
        provider,
        worker,
        settings.lifetimes,
        settings.runs,
        settings.quotas,
    )
    app.extensions["watchers"] = Watchers(
        r,
        per_owner=int(app.config["STREAMS_PER_OWNER"]),
        per_process=int(app.config["STREAMS_PER_PROCESS"]),
    )
    if background:
        provider.unavailable_models()  # checked once, at start-up: a wrong id is logged now
        worker.start_background()
    rendering.init_app(app)
    security.init_app(app)
    identity.init_app(app)
    for blueprint in (
        chat.bp,
        export_views.bp,
        search_views.bp,
        share_views.bp,
        resume.bp,
        auth.bp,
        ops.bp,
        errors.bp,
        admin_views.bp,
    ):
        app.register_blueprint(blueprint)
    return app


def start_embedded_redis(instance_path: str) -> str:
    """Start (or reuse) the embedded server that persists under the instance folder."""
    server = EmbeddedRedis(Path(instance_path) / "redis")
    url = server.start()
    atexit.register(server.stop)
    return url
