"""P2's baseline: a bare Flask + Redis + Jinja2 conversation page making the Redis reads the
app's page makes, served by gunicorn with the settings of `resume-chat serve`.

Run as ``python -m bench.bare_page --port PORT --workers N --threads N`` with REDIS_URL and
FLASK_SECRET_KEY set: the app's own secret, so that the app's session cookie names the
owner here too. No Markdown, no CSRF tokens, no forms per message: that is the app's work
the ratio measures.
"""

import argparse
import json
import os
from datetime import UTC, datetime

import redis
from flask import Flask, abort, render_template, session

from webapp.cli import GunicornServer
from webapp.storage import keys

PAGE_SIZE = 50

app = Flask(__name__)
app.secret_key = os.environ.get("FLASK_SECRET_KEY")
store = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://"), decode_responses=True)


@app.template_filter("time")
def format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


@app.get("/c/<conversation_id>")
def conversation(conversation_id: str):
    """The newest PAGE_SIZE messages of the visitor's own conversation, 404 otherwise."""
    meta = store.hgetall(keys.conversation_meta(conversation_id))
    if not meta or meta["owner"] != f"guest:{session.get('guest_id')}":
        abort(404)
    count = int(meta["message_count"])
    first_index = max(0, count - PAGE_SIZE)
    raw = store.lrange(keys.conversation_messages(conversation_id), first_index, count - 1)
    return render_template(
        "bare_conversation.html",
        conversation_id=conversation_id,
        meta=meta,
        first_index=first_index,
        messages=[json.loads(item) for item in raw],
        run=store.hgetall(keys.conversation_run(conversation_id)),
        session_fields=store.hgetall(keys.conversation_session(conversation_id)),
        draft=store.get(keys.conversation_draft(conversation_id)) or "",
    )


def _when_worker_ready(worker) -> None:
    worker.log.info("Worker ready (pid: %s)", worker.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    options = parser.parse_args()
    GunicornServer(
        lambda: app,
        f"127.0.0.1:{options.port}",
        options.workers,
        options.threads,
        _when_worker_ready,
    ).run()


if __name__ == "__main__":
    main()
