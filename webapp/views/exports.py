"""Export and import pages: a conversation as Markdown or JSON, an account's conversations
as one JSON file, and a conversation made from an exported JSON file."""

import json

from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask_login import current_user

from webapp import config, exports, quotas
from webapp.quotas import QuotaReached
from webapp.storage import get_redis
from webapp.views.chat import owned_conversation, refused_by_quota
from webapp.views.identity import client_address, current_owner

bp = Blueprint("exports", __name__)


def _download(body: str, mimetype: str, filename: str) -> Response:
    return Response(
        body,
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@bp.get("/c/<conversation_id>/export.json")
def conversation_json(conversation_id: str):
    exported = exports.export(get_redis(), owned_conversation(conversation_id))
    body = json.dumps(exported, ensure_ascii=False, indent=2)
    return _download(body, "application/json", f"conversation-{conversation_id}.json")


@bp.get("/c/<conversation_id>/export.md")
def conversation_markdown(conversation_id: str):
    exported = exports.export(get_redis(), owned_conversation(conversation_id))
    return _download(
        exports.to_markdown(exported), "text/markdown", f"conversation-{conversation_id}.md"
    )


@bp.get("/export.json")
def everything():
    """An account's conversations, all of them, as one file."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.path))
    exported = exports.export_owner(get_redis(), current_user.owner)
    body = json.dumps(exported, ensure_ascii=False, indent=2)
    return _download(body, "application/json", f"conversations-{current_user.username}.json")


@bp.route("/import", methods=["GET", "POST"])
def import_conversation():
    """A new conversation of this visitor's from a conversation's JSON export."""
    if request.method == "GET":
        return render_template("chat/import.html")
    upload = request.files.get("file")
    try:
        title, messages = exports.parse_import(upload.read() if upload else b"")
    except exports.ImportRejected as rejected:
        return render_template(
            "chat/import.html", error=f"That file can't be imported: {rejected}."
        ), 400
    r, settings, owner = get_redis(), config.current(), current_owner()
    try:
        with quotas.new_conversation(
            r, settings.quotas, owner, client_address(), settings.lifetimes.transcript_retention
        ) as conversation_id:
            exports.import_conversation(
                r, owner, title, messages, settings.lifetimes, conversation_id
            )
    except QuotaReached as quota:
        return refused_by_quota(render_template("chat/import.html", error=quota.text), quota)
    return redirect(url_for("chat.conversation", conversation_id=conversation_id) + "#latest")
