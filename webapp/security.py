"""CSRF protection, the security headers every response carries, Secure cookies, and
redirects that stay on this site."""

import re
from urllib.parse import unquote, urlsplit

from flask import Flask, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

csrf = CSRFProtect()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def init_app(app: Flask) -> None:
    csrf.init_app(app)
    app.after_request(_add_security_headers)
    app.wsgi_app = SecureCookiesOverHttps(app.wsgi_app)
    proxies = int(app.config["TRUSTED_PROXIES"])
    if proxies:
        # Behind that many proxies, trust their X-Forwarded-For and -Proto: the client's
        # address (for rate limits) and whether it came over HTTPS (for Secure cookies).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)


def _add_security_headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    if request.endpoint != "static":
        # Every page but the static files may show a conversation, an account or the
        # console: no browser or proxy keeps a copy (ASVS V14.3).
        response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


class SecureCookiesOverHttps:
    """WSGI middleware: a response served over HTTPS marks every cookie Secure, so it is
    never sent back over plain HTTP. (It wraps the whole app because Flask writes the
    session cookie after every after_request hook has run.)"""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("wsgi.url_scheme") != "https":
            return self.wsgi_app(environ, start_response)

        def start_secure(status, headers, exc_info=None):
            headers = [
                (name, f"{value}; Secure")
                if name.lower() == "set-cookie" and "; Secure" not in value
                else (name, value)
                for name, value in headers
            ]
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_secure)


_IGNORED_BY_BROWSERS = re.compile(r"[\x00-\x20\x7f]")
"""Control characters and white space, which browsers drop from a URL (a tab or a newline
in ``/\t/evil`` leaves ``//evil``)."""


def same_site_path(target: str) -> str:
    """``target`` if it is a path on this site, else "/": for ``next=`` and every other
    redirect or link built from the request. Read as a browser would read it, after
    percent-decoding (twice over), dropping control characters and white space, and taking
    a backslash for a slash, it must be a path that starts with one slash and names no other
    host or scheme (``//evil``, ``/\\evil``, ``/%09/evil``, ``https:evil``, ``/%2F%2Fevil``)."""
    if target != target.strip() or _IGNORED_BY_BROWSERS.search(target) or "\\" in target:
        return "/"
    seen = target
    for _ in range(3):
        seen = _IGNORED_BY_BROWSERS.sub("", unquote(seen)).replace("\\", "/")
    try:
        parts = urlsplit(seen)
    except ValueError:  # "//[" : no URL at all
        return "/"
    if parts.scheme or parts.netloc or not seen.startswith("/") or seen.startswith("//"):
        return "/"
    return target
