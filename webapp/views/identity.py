"""Who is asking: for now a guest, identified by a random id kept in the signed cookie."""

import secrets

from flask import session


def current_owner() -> str:
    """The owner string of this browser's conversations, made on first use."""
    if "guest_id" not in session:
        session["guest_id"] = secrets.token_urlsafe(16)
        session.permanent = True
    return f"guest:{session['guest_id']}"
