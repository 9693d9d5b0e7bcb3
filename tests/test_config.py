"""Settings: defaults, the FLASK_ prefix, the vendor names, and the README lists them all."""

from pathlib import Path

from webapp import config, create_app

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_documents_every_setting_with_its_default():
    readme = README.read_text()
    for name, default in config.DEFAULTS.items():
        documented = name if name in config.VENDOR_SETTINGS else f"FLASK_{name}"
        assert f"`{documented}`" in readme, f"{documented} is not in the README"
        if default is not None and not isinstance(default, bool):
            assert f"`{default}`" in readme, f"the default of {name} is not in the README"


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
