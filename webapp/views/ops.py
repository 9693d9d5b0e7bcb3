"""Operator endpoints: liveness and readiness."""

import redis
from flask import Blueprint

from webapp.storage import get_redis

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive; says nothing of Redis."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Ready to serve: Redis answers PING."""
    try:
        get_redis().ping()
    except redis.exceptions.RedisError as error:
        return {"status": "unavailable", "redis": type(error).__name__}, 503
    return {"status": "ok", "redis": "ok"}
