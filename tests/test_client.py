"""The app's client executes pipelines as redis-py does: the same answers, errors, retries
and connections, with less bookkeeping of its own."""

import pytest
import redis

from webapp.storage.client import Client, Pipeline


def queue_every_kind(pipe, key: str) -> None:
    """Commands whose answers redis-py reshapes (bools, dicts, pairs, floats), one refused."""
    pipe.set(f"{key}:s", "1")
    pipe.incr(f"{key}:s")
    pipe.hset(f"{key}:h", mapping={"a": "1", "b": "é"})
    pipe.hgetall(f"{key}:h")
    pipe.expire(f"{key}:h", 100)
    pipe.expire(f"{key}:missing", 100)
    pipe.zadd(f"{key}:z", {"m": 1.5, "n": 2})
    pipe.zrange(f"{key}:z", 0, -1, withscores=True)
    pipe.zscore(f"{key}:z", "n")
    pipe.hincrby(f"{key}:h", "b", 1)  # refused: not an integer
    pipe.exists(f"{key}:s", f"{key}:missing")
    pipe.rpush(f"{key}:l", "x", "y")
    pipe.lrange(f"{key}:l", 0, -1)


@pytest.mark.parametrize("transaction", [False, True])
def test_a_pipeline_answers_what_redis_pys_answers(real_redis, transaction):
    plain = redis.Redis(connection_pool=real_redis.connection_pool)
    answers = {}
    for name, client in (("app", real_redis), ("redis-py", plain)):
        pipe = client.pipeline(transaction=transaction)
        queue_every_kind(pipe, name)
        answers[name] = pipe.execute(raise_on_error=False)
    assert type(real_redis.pipeline()) is Pipeline
    assert type(plain.pipeline()) is redis.client.Pipeline
    refused = [answer for answer in answers["app"] if isinstance(answer, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], redis.exceptions.ResponseError)
    same = [answer for answer in answers["app"] if not isinstance(answer, Exception)]
    expected = [answer for answer in answers["redis-py"] if not isinstance(answer, Exception)]
    assert same == expected
    assert same[4:6] == [True, False]  # EXPIRE's answers as redis-py gives them
    assert same[3] == {"a": "1", "b": "é"}
    assert same[6:9] == [2, [("m", 1.5), ("n", 2.0)], 2.0]
    assert not real_redis.connection_pool._in_use_connections


@pytest.mark.parametrize("transaction", [False, True])
def test_the_first_refusal_is_raised_as_redis_py_raises_it(real_redis, transaction):
    plain = redis.Redis(connection_pool=real_redis.connection_pool)
    raised = []
    for name, client in (("app", real_redis), ("redis-py", plain)):
        real_redis.set(f"{name}:n", "not a number")
        pipe = client.pipeline(transaction=transaction)
        pipe.incr(f"{name}:n")
        pipe.get(f"{name}:n")
        with pytest.raises(redis.exceptions.ResponseError) as error:
            pipe.execute()
        raised.append(str(error.value).replace(name, "KEY"))
    assert raised[0] == raised[1]
    assert "Command # 1 (INCRBY KEY:n 1) of pipeline caused error" in raised[0]
    assert not real_redis.connection_pool._in_use_connections


def test_a_pipeline_whose_connection_fails_is_sent_again_on_a_new_one(real_redis, monkeypatch):
    pool = real_redis.connection_pool
    connection = pool.get_connection()
    pool.release(connection)  # the one the next pipeline takes
    send = connection.send_packed_command
    sent = []

    def failing_once(command, check_health=True):
        sent.append(command)
        if len(sent) == 1:
            raise redis.exceptions.ConnectionError("dropped")
        return send(command, check_health)

    monkeypatch.setattr(connection, "send_packed_command", failing_once)
    pipe = real_redis.pipeline(transaction=False)
    pipe.incr("retried")
    pipe.get("retried")
    assert pipe.execute() == [1, "1"]  # sent twice, applied once: the first never left
    ours = [command for command in sent if b"retried" in b"".join(command)]
    assert len(ours) == 2 and ours[0] == ours[1]  # then on a new connection (HELLO...)
    assert not pool._in_use_connections


def test_a_pipeline_that_cannot_reach_the_server_raises_and_gives_its_connection_back(
    real_redis, monkeypatch
):
    pool = real_redis.connection_pool
    connection = pool.get_connection()
    pool.release(connection)

    def failing(command, check_health=True):
        raise redis.exceptions.ConnectionError("unreachable")

    monkeypatch.setattr(connection, "send_packed_command", failing)
    pipe = real_redis.pipeline(transaction=False)
    pipe.get("anything")
    with pytest.raises(redis.exceptions.ConnectionError):
        pipe.execute()
    assert not pool._in_use_connections
    assert pipe.command_stack == []


def test_the_apps_client_is_this_client(real_redis):
    assert isinstance(real_redis, Client)
