"""The embedded server persists under its folder and is not started twice over it."""

from webapp.storage import connect
from webapp.storage.embedded import EmbeddedRedis


def test_data_survives_a_restart_of_the_server(tmp_path):
    server = EmbeddedRedis(tmp_path)
    connect(server.start()).rpush("kept", "a", "b")
    server.stop()
    again = EmbeddedRedis(tmp_path)
    try:
        assert connect(again.start()).lrange("kept", 0, -1) == ["a", "b"]
    finally:
        again.stop()


def test_it_runs_with_the_persistence_production_needs(redis_server):
    config = connect(redis_server.url).config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"


def test_a_second_start_over_the_same_folder_reuses_the_running_server(tmp_path):
    first = EmbeddedRedis(tmp_path)
    url = first.start()
    second = EmbeddedRedis(tmp_path)
    try:
        assert second.start() == url
        assert second.process is None
    finally:
        second.stop()  # does nothing: it started nothing
        assert connect(url).ping()
        first.stop()
