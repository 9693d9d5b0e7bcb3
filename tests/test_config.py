"""Settings: defaults, the FLASK_ prefix, the vendor names, the README lists them all, and
settings that contradict each other stop the start."""

import json
import re
from pathlib import Path

import pytest
from redis.sentinel import SentinelConnectionPool

from tests import fake_anthropic
from webapp import config, create_app
from webapp.llm import CACHE_OFF

README = Path(__file__).resolve().parent.parent / "README.md"

# Rows of the README's settings table that are not keys of config.DEFAULTS, and why.
NOT_APP_SETTINGS = {
    # Read by `resume-chat serve` (click's envvar for --port), not by the app's config.
    "PORT",
    # Read by webapp/__init__.py at import, to place the instance folder before any app exists.
    "FLASK_INSTANCE_PATH",
}


def settings_table() -> dict[str, tuple[str, str]]:
    """The README's "## Settings" table: variable -> (default cell, meaning cell)."""
    section = README.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    cells = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))] for line in lines]
    assert cells[0] == ["variable", "default", "meaning"], cells[0]
    assert all(set(cell) <= set("-: ") for cell in cells[1]), cells[1]
    rows = {}
    for row in cells[2:]:
        assert len(row) == 3, f"settings row with {len(row)} cells: {row}"
        variable = re.fullmatch(r"`([A-Z0-9_]+)`", row[0])
        assert variable, f"the variable cell {row[0]!r} is not one `NAME`"
        name = variable[1]
        assert name not in rows, f"{name} has two rows in the README's settings table"
        rows[name] = (row[1], row[2])
    return rows


def documented_name(name: str) -> str:
    """The environment variable that sets ``name``."""
    return name if name in config.VENDOR_SETTINGS else f"FLASK_{name}"


def as_in_environment(value) -> str:
    """``value`` written as an environment variable (from_prefixed_env parses JSON)."""
    return value if isinstance(value, str) else json.dumps(value)


def test_readme_documents_every_setting_with_its_default():
    rows = settings_table()
    for name, default in config.DEFAULTS.items():
        variable = documented_name(name)
        assert variable in rows, f"{variable} has no row in the README's settings table"
        if default is None:
            continue
        cell = rows[variable][0]
        expected = as_in_environment(default)
        assert expected in re.findall(r"`([^`]*)`", cell), (
            f"{variable}: the README's default is {cell!r}, but config.DEFAULTS says `{expected}`"
        )


def test_readme_documents_no_setting_that_is_gone():
    documented = {documented_name(name) for name in config.DEFAULTS}
    allowed = documented | set(config.VENDOR_SETTINGS) | NOT_APP_SETTINGS
    stale = sorted(set(settings_table()) - allowed)
    assert not stale, f"the README's settings table lists settings that are not in config: {stale}"


def test_prefixed_environment_overrides_defaults(monkeypatch, redis_server):
    monkeypatch.setenv("FLASK_SESSION_IDLE_SECONDS", "42")
    monkeypatch.setenv("FLASK_ALLOW_GUESTS", "false")
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    app = create_app({"SECRET_KEY": "x"})
    assert app.config["SESSION_IDLE_SECONDS"] == 42
    assert app.config["ALLOW_GUESTS"] is False
    assert app.config["REDIS_URL"] == redis_server.url


def test_without_a_secret_key_one_is_made_once_and_kept(monkeypatch, redis_server, tmp_path):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setattr("webapp.INSTANCE_PATH", tmp_path)
    first = create_app().config["SECRET_KEY"]
    assert len(first) == 64
    assert create_app().config["SECRET_KEY"] == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_sentinels_are_read_from_the_prefixed_environment(monkeypatch):
    monkeypatch.setenv("FLASK_REDIS_SENTINELS", "10.0.0.1:26379, 10.0.0.2:26380")
    monkeypatch.setenv("FLASK_REDIS_SENTINEL_MASTER", "chat")
    monkeypatch.delenv("REDIS_URL", raising=False)
    app = create_app({"SECRET_KEY": "x"}, background=False)
    assert app.config["REDIS_SENTINELS"] == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert app.config["REDIS_URL"] is None  # no embedded server was started
    for name in ("redis", "redis_blocking"):
        pool = app.extensions[name].connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "chat"


@pytest.mark.parametrize(
    ("settings", "refusal"),
    [
        ({"REDIS_CLUSTER": True}, "FLASK_REDIS_SENTINELS and FLASK_REDIS_CLUSTER"),
        ({"REDIS_SENTINEL_MASTER": ""}, "FLASK_REDIS_SENTINEL_MASTER is empty"),
        ({"REDIS_URL": "rediss://:secret@/0"}, "REDIS_URL gives only the password"),
        ({"REDIS_URL": "unix:///run/redis.sock"}, "REDIS_URL gives only the password"),
        ({"REDIS_SENTINELS": "10.0.0.1"}, "'10.0.0.1' is not host:port"),
        ({"REDIS_SENTINELS": "10.0.0.1:26379,,10.0.0.2:26379"}, "'' is not host:port"),
        ({"REDIS_SENTINELS": ":26379"}, "':26379' is not host:port"),
        ({"REDIS_SENTINELS": "10.0.0.1:sentinel"}, "'10.0.0.1:sentinel' is not host:port"),
        ({"REDIS_SENTINELS": "10.0.0.1:65536"}, "'10.0.0.1:65536' is not host:port"),
    ],
)
def test_sentinel_settings_that_cannot_work_stop_the_start(settings, refusal):
    with pytest.raises(config.SettingsError, match=re.escape(refusal)):
        create_app({"SECRET_KEY": "x", "REDIS_SENTINELS": "10.0.0.1:26379", **settings})


def test_with_sentinels_redis_url_gives_the_password_and_database(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    app = create_app(
        {
            "SECRET_KEY": "x",
            "REDIS_SENTINELS": "10.0.0.1:26379",
            "REDIS_URL": "redis://:secret@/2",
        },
        background=False,
    )
    kwargs = app.extensions["redis"].connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["db"]) == ("secret", 2)


@pytest.mark.parametrize(
    ("settings", "refusal"),
    [
        ({"THINKING_EFFORT": "extreme"}, "FLASK_THINKING_EFFORT is 'extreme': it takes one of"),
        ({"THINKING_EFFORT": "High"}, "FLASK_THINKING_EFFORT is 'High'"),
        ({"PROMPT_CACHE_TTL": "10m"}, "FLASK_PROMPT_CACHE_TTL is '10m': it takes one of 5m, 1h"),
    ],
)
def test_a_setting_outside_its_values_stops_the_start(settings, refusal):
    with pytest.raises(config.SettingsError, match=re.escape(refusal)):
        create_app({"SECRET_KEY": "x", **settings}, background=False)


def test_the_settings_values_are_those_the_messages_api_takes():
    # The strict fake reads the values from the SDK's own types.
    assert config.CHOICES["THINKING_EFFORT"] == fake_anthropic.EFFORTS
    assert config.CHOICES["PROMPT_CACHE_TTL"] == (*fake_anthropic.CACHE_TTLS, CACHE_OFF)
