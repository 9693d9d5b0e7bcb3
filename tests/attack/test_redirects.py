"""Open redirects: whatever ``next=`` says, every Location and every link built from it stays
on this site."""

import re
from html import unescape

import pytest

from tests.test_auth import PASSWORD, csrf, log_in, register
from webapp.security import same_site_path

HOSTILE = [
    "//evil.example/",
    "/\\evil.example/",
    "/%09/evil.example",
    "https:evil.example",
    "/%2F%2Fevil.example",
    "/%252F%252Fevil.example",
    "\r\nLocation: https://evil.example/",
    "/\r\nLocation: https://evil.example/",
    "https://evil.example/",
    "javascript:alert(1)",
    " /evil",
    "//[",  # not even a URL: urlsplit raises
]
SAFE = ["/", "/c/abcdefgh12345678", "/resume/continue", "/c/x?before=50", "/admin?owner=ada"]


@pytest.mark.parametrize("target", HOSTILE)
def test_a_hostile_next_becomes_the_start_page(target):
    assert same_site_path(target) == "/"


@pytest.mark.parametrize("target", SAFE)
def test_a_path_on_this_site_is_kept_as_it_is(target):
    assert same_site_path(target) == target


def hidden_next(html):
    return unescape(re.search(r'name="next" value="([^"]*)"', html)[1])


@pytest.mark.parametrize("target", HOSTILE)
def test_logging_in_with_a_hostile_next_lands_on_this_site(app, target):
    register(app.test_client())
    client = app.test_client()
    assert hidden_next(client.get("/login", query_string={"next": target}).text) == "/"
    response = log_in(client, next_url=target)
    assert response.status_code == 302
    assert response.location == "/"


@pytest.mark.parametrize("target", HOSTILE)
def test_the_move_pages_links_stay_on_this_site(app, chat, target):
    chat.start_conversation("Before I had an account")  # a guest with a conversation
    client = chat.client
    response = client.post(
        "/register",
        data={
            "csrf_token": csrf(client, "/register"),
            "username": "mover",
            "password": PASSWORD,
            "next": target,
        },
    )
    assert response.location.startswith("/account/move")
    page = client.get(response.location).text
    assert 'href="/">Not now</a>' in page
    assert hidden_next(page) == "/"
    moved = client.post(
        "/account/move", data={"csrf_token": csrf(client, "/account/move"), "next": target}
    )
    assert moved.location == "/"
