"""Markdown for replies: rendered with raw HTML off, code blocks highlighted, then
sanitised."""

import functools
from datetime import UTC, datetime

import nh3
from flask import Flask
from jinja2.utils import htmlsafe_json_dumps
from markdown_it import MarkdownIt
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from webapp.conversations import Message

MESSAGES_KEPT = 1024
"""Messages whose HTML (and part of the browser's copy) a worker keeps: about twenty pages'
worth, a few MB for typical messages, 64 MB at most for the longest replies."""

_FORMATTER = HtmlFormatter(nowrap=True)
"""Pygments' token classes (``k``, ``s``...) as spans; static/app.css colours them."""


def _highlight(code: str, language: str, _attributes) -> str:
    """A fenced block's code as highlighted HTML, for a language Pygments knows; "" (plain,
    escaped by markdown-it) otherwise."""
    try:
        lexer = get_lexer_by_name(language.strip().split()[0]) if language.strip() else None
    except ClassNotFound:
        lexer = None
    return highlight(code, lexer, _FORMATTER) if lexer else ""


_markdown = MarkdownIt("commonmark", {"html": False, "highlight": _highlight}).enable("table")

ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "a",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "del", "span",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
    "code": {"class"},  # language-<name>, from the fence
    "span": {"class"},  # Pygments' token classes
}


# Messages never change once stored, and every page view renders its 50 again: a worker
# keeps the HTML (and times) of the ones it rendered last, a few MB at most.
@functools.lru_cache(maxsize=4096)
def markdown_to_html(text: str) -> Markup:
    """Safe HTML for model text: no raw HTML, images, scripts or event handlers."""
    html = _markdown.render(text)
    return Markup(  # noqa: S704 (sanitised by nh3 just above)
        nh3.clean(
            html,
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            url_schemes={"http", "https", "mailto"},
            link_rel="noopener noreferrer nofollow",
        )
    )


@functools.lru_cache(maxsize=4096)
def format_time(timestamp: float) -> str:
    """A UTC timestamp as a short, unambiguous date and time."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso_time(timestamp: float) -> str:
    """A UTC timestamp as a machine-readable date and time (for ``<time datetime>``)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=4096)
def time_tag(timestamp: float, relative: bool = False) -> Markup:
    """A ``<time>`` in UTC that the page's script shows in the reader's own time zone (and,
    ``relative``, as "5 min ago"); without script it stays in UTC."""
    how = "relative" if relative else "local"
    return Markup(  # noqa: S704 (two formatted dates, nothing from a user)
        f'<time datetime="{iso_time(timestamp)}" data-show="{how}">{format_time(timestamp)}</time>'
    )


@functools.lru_cache(maxsize=MESSAGES_KEPT)
def _copy_item(role: str, content: str) -> str:
    return htmlsafe_json_dumps({"role": role, "content": content})


def browser_copy_json(messages: list[Message]) -> Markup:
    """The messages as the browser keeps them (role and text), as JSON safe inside a
    ``<script>`` element: each message's part made once per worker."""
    return Markup("[" + ",".join(_copy_item(m.role, m.content) for m in messages) + "]")  # noqa: S704 (htmlsafe JSON)


def init_app(app: Flask) -> None:
    """Template filters for Markdown and times, the message HTML every transcript is made
    of, and the model's name in every page."""
    app.add_template_filter(markdown_to_html, "markdown")
    app.add_template_filter(format_time, "time")
    app.add_template_filter(time_tag, "time_tag")
    app.add_template_global(browser_copy_json, "browser_copy_json")
    # Made at the first page, once every global the macros may use is registered (a module
    # of its own: the one imports share stays made as it would be).
    macros = functools.cache(lambda: app.jinja_env.get_template("_macros.html").make_module())

    # The same message, at the same place, is the same HTML on every page view: a worker
    # keeps what it rendered last, as for Markdown.
    @functools.lru_cache(maxsize=MESSAGES_KEPT)
    def message_html(message: Message, index: int | None = None, forkable: bool = False) -> Markup:
        return macros().message(message, index, forkable)

    app.add_template_global(message_html, "message_html")
    app.context_processor(lambda: {"model_name": app.extensions["llm"].name})
