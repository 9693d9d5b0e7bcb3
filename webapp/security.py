"""CSRF protection and the security headers every response carries."""

from flask import Flask, request
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def init_app(app: Flask) -> None:
    csrf.init_app(app)
    app.after_request(_add_security_headers)


def _add_security_headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.is_secure:
        # Served over HTTPS (directly, or behind a proxy that says so): no cookie is ever
        # sent back over plain HTTP.
        cookies = response.headers.getlist("Set-Cookie")
        response.headers.remove("Set-Cookie")
        for cookie in cookies:
            response.headers.add(
                "Set-Cookie", cookie if "; Secure" in cookie else f"{cookie}; Secure"
            )
    return response
