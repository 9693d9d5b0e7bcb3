"""Owners: the one module that builds, parses and tells apart who owns a conversation."""

import subprocess
from pathlib import Path

import pytest

from webapp import owners

WEBAPP = Path(__file__).resolve().parent.parent / "webapp"


def test_an_account_and_a_guest_are_built_and_told_apart():
    account, guest = owners.of_user("u1"), owners.of_guest("g1")
    assert (owners.is_account(account), owners.is_guest(account)) == (True, False)
    assert (owners.is_account(guest), owners.is_guest(guest)) == (False, True)
    assert (owners.user_id(account), owners.user_id(guest)) == ("u1", None)


@pytest.mark.parametrize("text", ["user:u1", "guest:g1"])
def test_a_well_formed_owner_parses_as_itself(text):
    assert owners.parse(text) == text


@pytest.mark.parametrize(
    "text", ["", "user:", "guest", "admin:x", "user", ":x", "guest:" + "x" * owners.MAX_LENGTH]
)
def test_anything_else_is_no_owner(text):
    assert owners.parse(text) is None


def test_labels_name_accounts_by_username_and_guests_by_their_id():
    assert owners.label(owners.of_user("u1"), "ada") == "ada"
    assert owners.label(owners.of_user("abcdefgh"), None) == "deleted account abcdef"
    assert owners.label(owners.of_guest("ghijklmn"), None) == "guest ghijkl"


def test_no_other_module_looks_at_the_owner_prefix():
    found = subprocess.run(
        ["grep", "-rnE", "--include=*.py", r"[\"'](user|guest):", str(WEBAPP)],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert [line for line in found if not line.startswith(str(WEBAPP / "owners.py"))] == []
