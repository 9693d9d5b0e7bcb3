"""The list beside every chat page: the owner's conversations only, newest first, grouped by
day, each with its state (a reply being written, parked, expired) and a mark for a reply
that finished while its owner was away; rename from the list."""

import re
import time
from html import unescape

from tests.conftest import CSRF_FIELD
from tests.fake_anthropic import Hang
from tests.test_admin import end_session
from webapp import sidebar


def entries(client, path="/"):
    """The list's entries on a page: title -> (its marks, whether it is the page read)."""
    html = unescape(client.get(path).text)
    listed = {}
    for item in re.findall(r'<li class="entry[^"]*">(.*?)</li>', html, re.S):
        title = re.search(r"<a [^>]*>([^<]+)</a>", item)[1]
        marks = re.findall(r'<span class="mark[^"]*">([^<]+)</span>', item)
        listed[title] = (marks, 'aria-current="page"' in item)
    return listed


def test_the_list_shows_each_state_and_only_the_owners(app, chat, chat_factory, real_redis):
    fresh = chat.start_conversation("A fresh one")
    parked = chat.start_conversation("A parked one")
    csrf = CSRF_FIELD.search(chat.client.get(f"/c/{parked}").text)[1]
    chat.client.post(f"/c/{parked}/park", data={"csrf_token": csrf})
    expired = chat.start_conversation("An expired one")
    end_session(real_redis, expired)
    chat_factory(app).start_conversation("Someone else's")
    listed = entries(chat.client, f"/c/{fresh}")
    assert list(listed) == ["An expired one", "A parked one", "A fresh one"]  # newest first
    assert listed["An expired one"] == (["new reply", "needs a catch-up"], False)  # unseen
    assert listed["A parked one"] == (["parked under a code"], False)
    assert listed["A fresh one"] == ([], True)  # the page being read, its reply seen


def test_a_reply_being_written_then_finished_while_away_is_marked(
    make_claude_app, chat_factory, fake_anthropic
):
    chat = chat_factory(make_claude_app())
    other = chat.start_conversation("Read this one meanwhile")
    fake_anthropic.enqueue(Hang(after=1))
    away = chat.conversation_id_of(chat.start("Answer me while I'm away"))
    assert entries(chat.client, f"/c/{other}")["Answer me while I'm away"][0] == ["writing…"]
    fake_anthropic.release()
    chat.wait_for_reply(away)
    assert entries(chat.client, f"/c/{other}")["Answer me while I'm away"][0] == ["new reply"]
    chat.client.get(f"/c/{away}")  # seen
    assert entries(chat.client, f"/c/{other}")["Answer me while I'm away"][0] == []


def test_rename_from_the_list(app, chat, client, chat_factory):
    conversation_id = chat.start_conversation("A name to change")
    asked = unescape(client.get(f"/c/{conversation_id}/rename?next=//evil.example").text)
    assert "Rename or delete “A name to change”" in asked
    assert 'name="next" value="/"' in asked  # only a path on this site
    assert chat_factory(app).client.get(f"/c/{conversation_id}/rename").status_code == 404
    csrf = CSRF_FIELD.search(client.get("/").text)[1]
    renamed = client.post(
        f"/c/{conversation_id}/rename",
        data={"csrf_token": csrf, "title": "  Porto \n plans ", "next": "/"},
    )
    assert (renamed.status_code, renamed.location) == (302, "/")
    assert "Porto plans" in entries(client)
    empty = client.post(f"/c/{conversation_id}/rename", data={"csrf_token": csrf, "title": "  "})
    assert empty.status_code == 400 and "Type a name" in empty.text


def test_groups_go_by_day():
    now = time.time()
    assert sidebar.group_of(now, now) == "Today"
    assert sidebar.group_of(now - 86_400, now) == "Yesterday"
    assert sidebar.group_of(now - 3 * 86_400, now) == "Previous 7 days"
    assert sidebar.group_of(now - 30 * 86_400, now) == "Older"
