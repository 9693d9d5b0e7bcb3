"""Operator endpoints: liveness, readiness, and the metrics to scrape."""

import hmac

import redis
from flask import Blueprint, Response, current_app, request
from flask_login import current_user
from prometheus_client import CONTENT_TYPE_LATEST

from webapp import metrics
from webapp.admin import listing
from webapp.llm import get_provider
from webapp.storage import get_redis

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive; says nothing of Redis."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Ready to serve: Redis answers PING. A configured model that the API doesn't know
    (checked at start-up) is reported too, as "degraded": pages still serve every
    conversation, so the instance stays in rotation while replies can't be written."""
    try:
        get_redis().ping()
    except redis.exceptions.RedisError as error:
        return {"status": "unavailable", "redis": type(error).__name__}, 503
    unavailable = get_provider().unavailable_models()
    if unavailable:
        models = {f"FLASK_{setting}": why for setting, why in unavailable.items()}
        return {"status": "degraded", "redis": "ok", "models": models}
    return {"status": "ok", "redis": "ok"}


def _metrics_refusal() -> Response | None:
    """None if the caller may read /metrics: an admin's login, or the bearer token
    METRICS_TOKEN. Otherwise 401 (nothing presented) or 403 (presented, not enough)."""
    if current_user.is_authenticated and current_user.is_admin:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        expected = current_app.config["METRICS_TOKEN"]
        if expected and hmac.compare_digest(token.strip().encode(), str(expected).encode()):
            return None
        return Response("That token does not open /metrics.\n", 403, mimetype="text/plain")
    if current_user.is_authenticated:
        return Response("/metrics is for admins.\n", 403, mimetype="text/plain")
    return Response(
        "Log in as an admin, or send the metrics token as a bearer token.\n",
        401,
        {"WWW-Authenticate": 'Bearer realm="metrics"'},
        mimetype="text/plain",
    )


@bp.get("/metrics")
def metrics_text():
    """The app's counters in the Prometheus text format."""
    refusal = _metrics_refusal()
    if refusal is not None:
        return refusal
    r = get_redis()
    return Response(
        metrics.render(r, listing.count_states(r)),
        content_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )
