"""The XSS corpus in Chromium (S7, S8 of the README): every payload is typed and sent as a user's
message, comes back as Claude's reply through the fake Messages API (streamed live into the
page), and is shown again after a reload. Nothing runs, nothing is requested from another
origin, and the DOM holds no active content, CSP or not."""

import json
import re
import time
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect

from tests.fake_anthropic import Hang, last_user_text
from tests.limits import OUT_OF_REACH
from tests.xss_corpus import ATTACKER_HOST, KINDS, PAYLOADS, Payload
from webapp.conversations import make_title

pytestmark = pytest.mark.browser

CONVERSATION_URL = re.compile(r"/c/[A-Za-z0-9_-]{8,64}(#latest)?$")
TOKEN_DELAY_SECONDS = 0.002
"""Between the fake's tokens: each reply streams token by token, quickly."""
REPLY_TIMEOUT_MS = 10_000
"""Bound of the wait for one reply to be written and swapped into the page."""
TITLE_SUFFIX = " · Resume Chat"

WATCH_SCRIPT = """
(() => {
  const report = (kind, detail) => window.__xssReport(kind, String(detail));
  // Payloads set window.__xss: the setter tells the test at once, even from a page since left.
  let signal;
  Object.defineProperty(window, "__xss", {
    get: () => signal,
    set: (value) => { signal = value; report("window.__xss", value); },
  });
  document.addEventListener("securitypolicyviolation", (event) => {
    report("csp", `${event.effectiveDirective} blocked ${event.blockedURI || "inline"}: `
      + `${(event.sample || "").slice(0, 80)}`);
  });
  // The reply being written must grow as text: an element in it was parsed from the stream.
  new MutationObserver((mutations) => {
    for (const mutation of mutations) {
      if (!mutation.target.closest?.("#run-text")) continue;
      for (const node of mutation.addedNodes) {
        if (node.nodeType === Node.ELEMENT_NODE) report("live", node.outerHTML.slice(0, 160));
      }
    }
  }).observe(document, { childList: true, subtree: true });
  // What chat.js's EventSource receives, to prove the reply was rendered live.
  const NativeEventSource = window.EventSource;
  window.__sse = { created: 0, text: "" };
  window.EventSource = class extends NativeEventSource {
    constructor(...args) {
      super(...args);
      window.__sse.created += 1;
      this.addEventListener("message", (event) => {
        window.__sse.text += JSON.parse(event.data).text;
      });
    }
  };
})();
"""

ACTIVE_CONTENT = """
() => {
  const problems = [];
  const show = (element) => element.outerHTML.slice(0, 160);
  const HOSTILE_SCHEME = /^(javascript|vbscript|data):/i;
  // Browsers ignore control characters and spaces in a URL's scheme, so the check does too.
  const hostileUrl = (value) => HOSTILE_SCHEME.test(value.replace(/[\\u0000-\\u0020]/g, ""));
  const foreign = (value) => new URL(value, location.href).origin !== location.origin;
  const URL_ATTRIBUTES = ["href", "src", "srcset", "action", "formaction", "xlink:href",
    "data", "poster", "background", "ping", "srcdoc"];
  const ACTIVE_TAGS = ["script", "iframe", "frame", "frameset", "object", "embed", "applet",
    "img", "image", "picture", "source", "video", "audio", "track", "svg", "math", "style",
    "link", "meta", "base", "portal", "noscript", "template"];
  const FORMATTING_TAGS = ["p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "a",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr",
    "th", "td", "del", "span"];
  // A fence's language, or one of Pygments' short token classes (highlighted code).
  const INERT_CLASS = /^(language-\\S+|[a-z][a-z0-9]{0,3})$/;

  for (const element of document.querySelectorAll("*")) {
    for (const { name, value } of element.attributes) {
      if (name.toLowerCase().startsWith("on")) problems.push(`${name} handler: ${show(element)}`);
      if (URL_ATTRIBUTES.includes(name.toLowerCase()) && hostileUrl(value)) {
        problems.push(`${name}=${value.slice(0, 60)}: ${show(element)}`);
      }
    }
    if (element.hasAttribute("src") && foreign(element.getAttribute("src"))) {
      problems.push(`loads from another origin: ${show(element)}`);
    }
  }
  for (const script of document.scripts) {
    const ours = script.src === new URL("/static/chat.js", location.href).href
      || (script.id === "browser-copy" && script.type === "application/json");
    if (!ours) problems.push(`script: ${show(script)}`);
  }
  for (const element of document.querySelectorAll("meta[http-equiv], base, body iframe")) {
    problems.push(`${element.localName}: ${show(element)}`);
  }
  // What visitors and the model write: the page's body, the browser copy aside.
  for (const element of document.body.querySelectorAll("*")) {
    if (element.id === "browser-copy") continue;
    if (ACTIVE_TAGS.includes(element.localName)
        || element.namespaceURI !== "http://www.w3.org/1999/xhtml") {
      problems.push(`${element.localName}: ${show(element)}`);
    }
    if (element.localName === "form" && foreign(element.getAttribute("action") || "")) {
      problems.push(`form to another origin: ${show(element)}`);
    }
  }
  for (const text of document.querySelectorAll(".message .text")) {
    for (const element of text.querySelectorAll("*")) {
      // The page's own Copy button on a block of code (no model text makes a button).
      if (element.matches("button.copy-button[type=button]")) continue;
      if (element.className && !INERT_CLASS.test(element.className)) {
        problems.push(`class ${element.className}: ${show(element)}`);
      }
      if (!FORMATTING_TAGS.includes(element.localName)) {
        problems.push(`not formatting: ${show(element)}`);
      }
      if (element.hasAttribute("style")) problems.push(`style: ${show(element)}`);
      if (element.localName === "a" && element.hasAttribute("href")
          && !["http:", "https:", "mailto:"].includes(element.protocol)) {
        problems.push(`link to ${element.protocol}: ${show(element)}`);
      }
    }
  }
  return problems;
}
"""


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def plain(text: str) -> str:
    """Text as the page shows it: line ends as the HTML parser leaves them, spaces collapsed."""
    return " ".join(text.replace("\r\n", "\n").split())


class Watch:
    """Everything a payload could do that can be seen from outside the page: dialogs,
    ``window.__xss`` set, requests to another origin (aborted, so nothing hangs, but
    counted), elements parsed into the reply being written, and the CSP's reports of what
    it blocked (an attempt the CSP stopped is still a sanitiser's failure)."""

    def __init__(self, context: BrowserContext, app_url: str) -> None:
        self.origin = origin_of(app_url)
        self.dialogs: list[str] = []
        self.signals: list[str] = []
        self.foreign_requests: list[str] = []
        self.csp_reports: list[str] = []
        self.live_elements: list[str] = []
        context.expose_binding("__xssReport", self._report)
        context.add_init_script(WATCH_SCRIPT)
        context.on("request", self._request)
        context.route(lambda url: origin_of(url) != self.origin, lambda route: route.abort())
        context.on("page", self._page)

    def _page(self, page: Page) -> None:
        page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}({dialog.message!r}) on {dialog.page.url}")
        dialog.dismiss()

    def _report(self, source, kind: str, detail: str) -> None:
        where = source["page"].url
        if kind == "csp":
            self.csp_reports.append(f"{detail} on {where}")
        elif kind == "live":
            self.live_elements.append(f"{detail} on {where}")
        else:
            self.signals.append(f"{kind} = {detail} on {where}")

    def _request(self, request) -> None:
        if request.url.startswith(("http:", "https:")) and origin_of(request.url) != self.origin:
            self.foreign_requests.append(request.url)

    def findings(self, page: Page) -> dict:
        """What ran or was requested so far, and the active content in the page now."""
        return {
            "dialogs": self.dialogs,
            "window.__xss": self.signals,
            "requests to other origins": self.foreign_requests,
            "CSP reports": self.csp_reports,
            "elements in the reply being written": self.live_elements,
            "active content in the page": page.evaluate(ACTIVE_CONTENT),
        }

    def expect_inert(self, page: Page, when: str) -> None:
        findings = self.findings(page)
        assert not any(findings.values()), f"{when}: {json.dumps(findings, indent=2)}"
        assert page.evaluate("window.__xss") is None, when


@pytest.fixture
def claude_server(serve, fake_anthropic):
    """The app with Claude as its model: the fake API replies with the user's own text."""
    fake_anthropic.reply_text = last_user_text
    fake_anthropic.token_delay = TOKEN_DELAY_SECONDS
    return serve(
        env={"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": fake_anthropic.url},
        ANTHROPIC_MAX_RETRIES=0,
        **OUT_OF_REACH,
    )


@pytest.fixture
def watched(new_context, claude_server) -> tuple[Page, Watch]:
    context = new_context()
    watch = Watch(context, claude_server.url)
    return context.new_page(), watch


def wait_until(page: Page, condition, what: str) -> None:
    """Wait for ``condition``, letting Playwright deliver the page's events meanwhile."""
    deadline = time.monotonic() + REPLY_TIMEOUT_MS / 1000
    while not condition():
        assert time.monotonic() < deadline, what
        page.wait_for_timeout(10)


def send_and_stream(page: Page, fake_anthropic, text: str) -> None:
    """Type ``text`` into the page's message box and send it; the fake holds Claude's reply
    (the same text) until the conversation page is open, so all of it streams into the live
    page, which then swaps in the server's rendering."""
    fake_anthropic.enqueue(Hang(after=0))
    asked = len(fake_anthropic.message_requests)
    shown = page.locator("article.message").count()
    page.locator('textarea[name="text"]').fill(text)
    page.get_by_role("button", name="Send").click()
    # Waits that poll on each frame (expect() backs off to a second): the corpus is long.
    page.wait_for_url(CONVERSATION_URL)
    assert page.locator("#run").count() == 1, "the reply was not being written"
    page.wait_for_function("() => window.__sse.created > 0")
    wait_until(
        page, lambda: len(fake_anthropic.message_requests) > asked, "the model was never asked"
    )
    fake_anthropic.release()
    page.wait_for_selector("#run", state="detached", timeout=REPLY_TIMEOUT_MS)
    assert page.locator("article.message").count() == shown + 2
    streamed = page.evaluate("window.__sse.text")
    assert plain(streamed) == plain(text), "the reply did not stream into the live page"


def expect_exchange(page: Page, number: int, payload: Payload) -> None:
    """The conversation's ``number``-th exchange (from 0) shows the payload as the user's
    message, verbatim and as text, and what should show of it in the reply."""
    user = page.locator("article.message.user .text").nth(number)
    assert plain(user.text_content()) == plain(payload.text)
    assert user.evaluate("element => element.childElementCount") == 0
    reply = plain(page.locator("article.message.assistant .text").nth(number).text_content())
    assert plain(payload.shown) in reply, f"the reply shows {reply!r}"


def expect_titled(page: Page, first_text: str) -> None:
    """The conversation is titled after its first message, as text."""
    title = plain(make_title(first_text))
    assert plain(page.locator("h1.conversation-title").text_content()) == title
    assert page.title() == title + TITLE_SUFFIX


def test_the_corpus_is_inert(watched, claude_server, fake_anthropic):
    page, watch = watched
    page.goto(f"{claude_server.url}/")
    benign = f"**Bold** and [home]({claude_server.url}/) and [docs](https://example.org/docs)"
    send_and_stream(page, fake_anthropic, benign)
    reply = page.locator("article.message.assistant .text")
    expect(reply.locator("strong")).to_have_text("Bold")
    expect(reply.get_by_role("link", name="home")).to_have_attribute(
        "href", f"{claude_server.url}/"
    )
    expect(reply.get_by_role("link", name="docs")).to_have_attribute(
        "href", "https://example.org/docs"
    )
    watch.expect_inert(page, "a benign reply")

    # A conversation per kind, an exchange per payload.
    for kind in KINDS:
        payloads = [payload for payload in PAYLOADS if payload.kind == kind]
        page.goto(f"{claude_server.url}/")
        for number, payload in enumerate(payloads):
            send_and_stream(page, fake_anthropic, payload.text)
            where = f"payload {payload.number} ({kind}) {payload.text!r}"
            watch.expect_inert(page, f"{where}, rendered live")
            expect_exchange(page, number, payload)
        response = page.reload()
        assert "default-src 'self'" in response.headers["content-security-policy"]
        watch.expect_inert(page, f"the {kind} conversation, reloaded")
        for number, payload in enumerate(payloads):
            expect_exchange(page, number, payload)
        expect_titled(page, payloads[0].text)
        copy = json.loads(page.locator("#browser-copy").text_content())
        assert [plain(m["content"]) for m in copy] == [
            plain(p.text) for p in payloads for _ in ("user", "assistant")
        ]

    page.goto(f"{claude_server.url}/")
    listed = page.locator(".conversations li > a:not(.entry-actions)").all_text_contents()
    firsts = [benign] + [next(p.text for p in PAYLOADS if p.kind == kind) for kind in KINDS]
    assert sorted(map(plain, listed)) == sorted(plain(make_title(text)) for text in firsts)
    watch.expect_inert(page, "the list of conversations")


HOSTILE_HTML = (
    f'<div class="message"><div class="text"><img src="http://{ATTACKER_HOST}/1.png"'
    ' onerror="alert(1)"><script>window.__xss = 2; document.title = "XSS"</script>'
    '<a href="javascript:alert(3)">x</a></div></div>'
)
SEEN_IN_HOSTILE_HTML = {
    "onerror handler",
    "loads from another origin",
    "href=javascript",
    "script",
    "img",
    "not formatting",
    "link to javascript",
}


def kinds_of(problems: list[str]) -> set[str]:
    """What each problem ACTIVE_CONTENT found is, without the element it was found in."""
    return {problem.split(":")[0] for problem in problems}


def test_the_watch_sees_what_gets_through(new_context, app_server):
    """Markup the sanitiser let through, put into a page: without the CSP it runs and is
    seen running; with it, it is blocked and reported, and seen in the DOM all the same."""

    def hostile_page(keep_csp: bool) -> tuple[Page, Watch]:
        context = new_context()
        watch = Watch(context, app_server.url)

        def inject(route: Route) -> None:
            response = route.fetch()
            headers = dict(response.headers)
            if not keep_csp:
                del headers["content-security-policy"]
            body = re.sub(
                r"<main\b[^>]*>", lambda main: main[0] + HOSTILE_HTML, response.text(), count=1
            )
            route.fulfill(response=response, headers=headers, body=body)

        page = context.new_page()
        page.route(f"{app_server.url}/", inject)
        page.goto(f"{app_server.url}/")
        return page, watch

    page, watch = hostile_page(keep_csp=False)
    wait_until(page, lambda: watch.dialogs, "the payload's alert never showed")
    findings = watch.findings(page)
    assert findings["dialogs"] == [f"alert('1') on {app_server.url}/"]
    assert findings["window.__xss"] == [f"window.__xss = 2 on {app_server.url}/"]
    assert findings["requests to other origins"] == [f"http://{ATTACKER_HOST}/1.png"]
    assert findings["CSP reports"] == []
    assert page.title() == "XSS"
    assert kinds_of(findings["active content in the page"]) == SEEN_IN_HOSTILE_HTML

    page, watch = hostile_page(keep_csp=True)
    blocked = {"script-src-elem", "script-src-attr", "img-src"}
    wait_until(
        page,
        lambda: {report.split(" ")[0] for report in watch.csp_reports} == blocked,
        f"the CSP did not report all it blocked: {watch.csp_reports}",
    )
    findings = watch.findings(page)
    assert findings["dialogs"] == findings["window.__xss"] == []
    assert f"img-src blocked http://{ATTACKER_HOST}/1.png" in "\n".join(watch.csp_reports)
    assert page.title() != "XSS"
    assert kinds_of(findings["active content in the page"]) == SEEN_IN_HOSTILE_HTML
