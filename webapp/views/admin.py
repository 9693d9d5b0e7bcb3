"""The admin console: every conversation, the overview, the audit log, every share link,
and the actions (clear one, an owner's, all expired; sign a user out everywhere; revoke a
share link), each confirmed first.

Admins only: a visitor who is not logged in is sent to log in, anyone else gets 403. Every
action asks for confirmation (a POST without confirm=yes shows a page that posts it again
with confirm=yes, so it works without JavaScript) and is written to the audit log.
"""

from datetime import UTC, datetime

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from webapp import accounts, admin, config, conversations, owners, shares
from webapp.admin import audit, listing
from webapp.deletion import Deleted
from webapp.storage import get_redis

bp = Blueprint("admin", __name__, url_prefix="/admin")

SHARE_LINKS_SHOWN = 200
"""Share links the console lists: those that end last."""


@bp.before_request
def admins_only():
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if not current_user.is_admin:
        page = render_template(
            "errors/error.html",
            title="This page is for admins",
            text="Your account can't open the admin console. Ask an admin if you need it.",
        )
        return page, 403
    return None


def _refused(title: str, text: str, status: int = 400):
    return render_template("admin/refused.html", title=title, text=text), status


def _confirmed() -> bool:
    return request.form.get("confirm") == "yes"


def _confirm(heading: str, text: str, button: str):
    """The page that asks before an action: the same form again, with confirm=yes."""
    fields = {
        name: value for name, value in request.form.items() if name not in ("csrf_token", "confirm")
    }
    return render_template(
        "admin/confirm.html",
        heading=heading,
        text=text,
        button=button,
        action=request.path,
        fields=fields,
    )


def _done(message: str):
    flash(message)
    return redirect(url_for("admin.console") + "#audit")


def _cleared_text(cleared: Deleted) -> str:
    return (
        f"Cleared {cleared.conversations} conversation{'' if cleared.conversations == 1 else 's'}"
        f" ({cleared.keys} Redis key{'' if cleared.keys == 1 else 's'})."
    )


@bp.app_template_filter("duration")
def duration(seconds: int | None) -> str:
    """Time left on a TTL, short: "45 s", "12 min", "3 h 5 min", "6 d 23 h"."""
    if seconds is None:
        return "gone"
    if seconds < 0:
        return "no expiry"
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


@bp.app_template_filter("size")
def size(size_bytes: int) -> str:
    """A size in bytes, short: "320 B", "4.1 kB", "12.0 MB"."""
    if size_bytes < 1000:
        return f"{size_bytes} B"
    for unit in ("kB", "MB", "GB"):
        size_bytes /= 1000
        if size_bytes < 1000 or unit == "GB":
            break
    return f"{size_bytes:.1f} {unit}"


@bp.app_template_filter("utc_minute")
def utc_minute(timestamp: float) -> str:
    """A UTC timestamp to the minute, for table cells whose header says UTC."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


@bp.app_template_filter("hour")
def hour(timestamp: float) -> str:
    """The UTC hour a timestamp falls in, as "09:00"."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:00")


@bp.get("")
def console():
    r, settings = get_redis(), config.current()
    state = request.args.get("state", "")
    state = state if state in listing.STATES else None
    owner_text = request.args.get("owner", "").strip()
    try:
        owner = listing.resolve_owner(r, owner_text)
        owner_error = None
    except listing.UnknownOwner:
        owner, owner_error = None, f"There is no account named “{owner_text}”."
    view = admin.read_console(
        r,
        cursor=request.args.get("cursor", 0, type=int),
        page_size=int(current_app.config["ADMIN_PAGE_SIZE"]),
        state=state,
        owner=owner,
        limits=settings.quotas,
        retention=settings.lifetimes.transcript_retention,
    )
    return render_template(
        "admin/console.html",
        view=view,
        page=view.page if owner_error is None else listing.Page([], None),
        states=listing.STATES,
        state=state or "",
        owner_text=owner_text,
        owner_error=owner_error,
        owner_name=listing.describe_owner(r, owner) if owner else None,
        first_page=request.args.get("cursor", 0, type=int) == 0,
    )


@bp.post("/conversations/clear")
def clear_conversation():
    # The id comes in the form, like the other actions' targets: the routes with a
    # conversation id in their path are the owner's own.
    conversation_id = request.form.get("conversation_id", "")
    if not conversations.MESSAGE_ID.match(conversation_id):
        return _refused("Nothing to clear", "That is not a conversation id.", 404)
    r = get_redis()
    if not _confirmed():
        row = listing.conversation_row(r, conversation_id)
        text = (
            f"It belongs to {row.owner_name}: {row.message_count} messages, "
            f"{row.size_bytes:,} bytes, {row.state}. Every key of it is deleted; its owner "
            "will find it gone."
            if row
            else "It is already gone; clearing removes any keys it left behind."
        )
        return _confirm(f"Clear conversation {conversation_id}?", text, "Yes, clear it")
    cleared = audit.clear_conversation(r, conversation_id, current_user.username)
    return _done(_cleared_text(cleared))


@bp.post("/owners/clear")
def clear_owner():
    owner = owners.parse(request.form.get("owner", ""))
    if owner is None:
        return _refused("Nothing to clear", "Choose an owner from the list of conversations.")
    r = get_redis()
    if not _confirmed():
        name = listing.describe_owner(r, owner)
        return _confirm(
            f"Clear every conversation of {name}?",
            "Every key of each of their conversations is deleted. Their account, if they "
            "have one, is kept.",
            "Yes, clear them all",
        )
    cleared = audit.clear_owner(r, owner, current_user.username)
    return _done(_cleared_text(cleared))


@bp.post("/expired/clear")
def clear_expired():
    r = get_redis()
    if not _confirmed():
        counts = listing.count_states(r)
        return _confirm(
            "Clear every expired conversation?",
            f"About {counts[listing.EXPIRED]:,} conversations have no session "
            "left, only a transcript. Their transcripts are deleted; one whose owner comes "
            "back meanwhile is kept.",
            "Yes, clear expired conversations",
        )
    cleared = audit.clear_expired(r, current_user.username)
    return _done(_cleared_text(cleared))


@bp.post("/users/sign-out")
def sign_out_everywhere():
    username = request.form.get("username", "").strip()
    r = get_redis()
    user = accounts.find_user(r, username) if username else None
    if user is None:
        return _refused("No such account", f"There is no account named “{username}”.", 404)
    if not _confirmed():
        return _confirm(
            f"Sign {user.username} out everywhere?",
            "Every login of this account ends at once, on every device; they can log in "
            "again with their password.",
            "Yes, sign them out",
        )
    ended = audit.sign_out_everywhere(r, user, current_user.username)
    logins = f"{ended} live login{'' if ended == 1 else 's'}"
    return _done(f"Signed {user.username} out everywhere: {logins} ended.")


@bp.get("/shares")
def share_links():
    r = get_redis()
    links = shares.newest(r, SHARE_LINKS_SHOWN)
    names = {owner: listing.describe_owner(r, owner) for owner in {link.owner for link in links}}
    return render_template("admin/shares.html", links=links, names=names, shown=SHARE_LINKS_SHOWN)


@bp.post("/shares/revoke")
def revoke_share():
    token = request.form.get("token", "")
    r = get_redis()
    if not _confirmed():
        return _confirm(
            "Revoke this share link?",
            "Whoever opens it from now on finds it gone. The conversation it was made from "
            "is kept.",
            "Yes, revoke it",
        )
    ended = audit.revoke_share(r, token, current_user.username)
    if ended is None:
        return _refused("Nothing to revoke", "That share link has ended already.", 404)
    return _done(f"Revoked a share link to conversation {ended.conversation_id}.")
