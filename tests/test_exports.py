"""Export and import over HTTP: Markdown and JSON downloads of one's own conversations only,
an account's whole export, and imports read as untrusted input, round trip included."""

import io
import json
from html import unescape

import pytest

from tests.conftest import CSRF_FIELD
from tests.test_auth import register
from webapp import conversations, exports
from webapp.storage import keys


def download(client, path):
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Disposition"].startswith("attachment;")
    return response


def upload(client, body: bytes):
    csrf = CSRF_FIELD.search(client.get("/import").text)[1]
    return client.post(
        "/import",
        data={"csrf_token": csrf, "file": (io.BytesIO(body), "conversation.json")},
        content_type="multipart/form-data",
    )


def comparable(exported: dict) -> list[tuple]:
    return [
        (m["role"], m["content"], m["created_at"], m.get("status")) for m in exported["messages"]
    ]


def test_export_import_and_export_again_give_the_same_messages(chat, client, real_redis):
    conversation_id = chat.start_conversation("Plan a trip to Porto")
    chat.send(conversation_id, "With a day in Braga")
    chat.wait_for_reply(conversation_id)
    first = download(client, f"/c/{conversation_id}/export.json").json
    assert first["format"] == exports.FORMAT and len(first["messages"]) == 4

    imported = upload(client, json.dumps(first).encode())
    assert imported.status_code == 302, imported.text
    copy_id = imported.location.split("#")[0].rsplit("/", 1)[-1]
    assert copy_id != conversation_id
    again = download(client, f"/c/{copy_id}/export.json").json
    assert comparable(again) == comparable(first)
    assert again["title"] == first["title"]
    assert "With a day in Braga" in client.get(f"/c/{copy_id}").text


def test_markdown_export_reads_as_the_conversation(chat, client):
    conversation_id = chat.start_conversation("Plan a trip to Porto")
    markdown = download(client, f"/c/{conversation_id}/export.md").text
    assert markdown.startswith("# Plan a trip to Porto\n")
    assert "## You, " in markdown and "## Assistant, " in markdown
    assert "You said: “Plan a trip to Porto”" in markdown


def test_only_the_owner_can_export(app, chat, chat_factory):
    conversation_id = chat.start_conversation("Mine alone")
    stranger = chat_factory(app).client
    for suffix in ("json", "md"):
        response = stranger.get(f"/c/{conversation_id}/export.{suffix}")
        assert response.status_code == 404
        assert "Mine alone" not in response.text


def test_an_account_downloads_all_its_conversations(app, chat_factory):
    account = chat_factory(app)
    register(account.client, "ada")
    ids = [account.start_conversation(f"conversation {n}") for n in range(3)]
    everything = download(account.client, "/export.json").json
    assert everything["format"] == exports.ALL_FORMAT
    assert [c["title"] for c in everything["conversations"]] == [
        f"conversation {n}" for n in reversed(range(3))
    ]
    assert len(ids) == 3
    assert chat_factory(app).client.get("/export.json").status_code == 302  # a guest: log in


def one_message(**message) -> bytes:
    return json.dumps({"format": exports.FORMAT, "messages": [message]}).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "it is not JSON"),
        (b"[" * 1000 + b"]" * 1000, "it is not JSON"),
        (json.dumps({"format": "other", "messages": []}).encode(), "not one conversation"),
        (json.dumps({"format": exports.FORMAT, "messages": []}).encode(), "1 to 5,000"),
        (one_message(role="system", content="x"), "roles are user, assistant or note"),
        (one_message(role="user", content=42), "contents are text"),
        (one_message(role="user", content="\ud800"), "not text"),
        (one_message(role="user", content="hi", owner="x"), "nothing unknown"),
        (one_message(role="note", content="a summary", status="obey me"), "roles are"),
        (one_message(role="note", content="a summary", status="model", tokens=-1), "whole"),
    ],
    ids=[
        "not-json",
        "deep",
        "format",
        "empty",
        "role",
        "number",
        "surrogate",
        "unknown-field",
        "status",
        "tokens",
    ],
)
def test_a_bad_file_gets_the_400_page_and_creates_nothing(client, real_redis, body, reason):
    client.get("/")
    before = set(real_redis.scan_iter(match=keys.CONVERSATION_META_PATTERN))
    refused = upload(client, body)
    assert refused.status_code == 400
    assert reason in unescape(refused.text)
    assert set(real_redis.scan_iter(match=keys.CONVERSATION_META_PATTERN)) == before


def test_an_import_is_held_to_the_new_conversations_quota(make_app, chat_factory):
    chat = chat_factory(make_app(NEW_CONVERSATIONS_PER_MINUTE=1))
    conversation_id = chat.start_conversation("One allowed")
    exported = download(chat.client, f"/c/{conversation_id}/export.json").json
    refused = upload(chat.client, json.dumps(exported).encode())
    assert refused.status_code == 429
    assert conversations.list_conversations(
        chat.client.application.extensions["redis"],
        conversations.get_conversation(
            chat.client.application.extensions["redis"], conversation_id
        ).owner,
    )
