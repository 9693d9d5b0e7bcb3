"""The search page: a visitor's own conversations, by the words of their titles and text."""

from flask import Blueprint, current_app, render_template, request

from webapp import config, quotas, search
from webapp.quotas import QuotaReached
from webapp.sidebar import read_sidebar
from webapp.storage import get_redis
from webapp.views.chat import refused_by_quota
from webapp.views.identity import current_owner

bp = Blueprint("search", __name__)


def _use_index(r) -> bool:
    """Whether this server has a search module to use (asked once per process)."""
    known = current_app.extensions.get("search_module")
    if known is None:
        known = not current_app.config["REDIS_CLUSTER"] and search.has_search_module(r)
        current_app.extensions["search_module"] = known
    return known


@bp.get("/search")
def search_page():
    r, owner = get_redis(), current_owner()
    query = request.args.get("q", "")[: search.MAX_QUERY_CHARS]

    def page(found=None, error=None):
        return render_template(
            "chat/search.html",
            sidebar=read_sidebar(r, owner),
            query=query,
            words=search.words_of(query),
            found=found,
            error=error,
        )

    if not search.words_of(query):
        return page()
    try:
        quotas.take_search(r, config.current().quotas, owner)
    except QuotaReached as quota:
        return refused_by_quota(page(error=quota.text), quota)
    page_size = int(current_app.config["PAGE_SIZE"])
    return page(found=search.search(r, owner, query, page_size, _use_index(r)))
