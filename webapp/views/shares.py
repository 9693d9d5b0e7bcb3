"""Share links: the owner's page of a conversation's links (make one, revoke one), and the
read-only snapshot anyone with a link may open, and continue in a chat of their own."""

from flask import (
    Blueprint,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    url_for,
)

from webapp import config, conversations, quotas, shares
from webapp.conversations import ConversationGone
from webapp.quotas import QuotaReached
from webapp.storage import get_redis
from webapp.views.chat import owned_conversation, refused_by_quota
from webapp.views.identity import client_address, current_owner

bp = Blueprint("shares", __name__)


def _links_page(conversation, error=None):
    return render_template(
        "chat/shares.html",
        conversation=conversation,
        links=shares.of_conversation(get_redis(), conversation.owner, conversation.id),
        error=error,
    )


@bp.get("/c/<conversation_id>/shares")
def links(conversation_id: str):
    return _links_page(owned_conversation(conversation_id))


@bp.post("/c/<conversation_id>/shares")
def share(conversation_id: str):
    conversation = owned_conversation(conversation_id)
    try:
        shares.create(
            get_redis(),
            conversation.owner,
            conversation.id,
            int(current_app.config["SHARE_LINK_SECONDS"]),
            int(current_app.config["SHARE_LINKS_PER_OWNER"]),
        )
    except QuotaReached as quota:
        return refused_by_quota(_links_page(conversation, error=quota.text), quota)
    except ConversationGone:
        abort(404)
    return redirect(url_for("shares.links", conversation_id=conversation.id))


@bp.post("/c/<conversation_id>/shares/<token>/revoke")
def revoke(conversation_id: str, token: str):
    conversation = owned_conversation(conversation_id)
    shares.revoke(get_redis(), token, owner=conversation.owner)  # gone already: the same
    return redirect(url_for("shares.links", conversation_id=conversation.id))


def _snapshot(token: str):
    found = shares.read(get_redis(), token)
    if found is None:
        abort(404)
    return found


@bp.get("/s/<token>")
def snapshot(token: str):
    link, messages = _snapshot(token)
    response = make_response(render_template("chat/snapshot.html", link=link, messages=messages))
    # Never in a search engine's index, nor in a cache that would outlive a revocation.
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.post("/s/<token>/continue")
def continue_in_own_chat(token: str):
    """A new conversation of this visitor's, holding the snapshot's messages."""
    link, messages = _snapshot(token)
    r, settings, owner = get_redis(), config.current(), current_owner()
    try:
        with quotas.new_conversation(
            r, settings.quotas, owner, client_address(), settings.lifetimes.transcript_retention
        ) as conversation_id:
            conversations.create_conversation(r, owner, settings.lifetimes, conversation_id)
            conversations.fill_conversation(
                r,
                conversation_id,
                [message.to_json() for message in messages],
                link.title,
                settings.lifetimes,
            )
    except QuotaReached as quota:
        page = render_template("chat/snapshot.html", link=link, messages=messages, error=quota.text)
        return refused_by_quota(page, quota)
    return redirect(url_for("chat.conversation", conversation_id=conversation_id) + "#latest")
