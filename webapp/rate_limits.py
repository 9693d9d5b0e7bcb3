"""Rate limits, kept in Redis (Flask-Limiter), so they hold across workers and instances."""

from flask import Flask, current_app
from flask_limiter import Limiter
from limits import parse

from webapp.storage import keys

limiter = Limiter(key_func=lambda: "", strategy="fixed-window")


def init_app(app: Flask) -> None:
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"key_prefix": keys.RATE_LIMITS_PREFIX})
    limiter.init_app(app)


def allow_model_call(owner: str) -> bool:
    """Count one model call for ``owner``; False once over MODEL_CALLS_PER_MINUTE."""
    per_minute = int(current_app.config["MODEL_CALLS_PER_MINUTE"])
    return limiter.limiter.hit(parse(f"{per_minute}/minute"), "model-calls", owner)
