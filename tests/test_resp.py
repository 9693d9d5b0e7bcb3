"""The app's command packer writes what redis-py's own writes, byte for byte."""

import math

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import PythonRespSerializer

from webapp.storage.resp import ENCODER, CommandPacker

REDIS_PY = PythonRespSerializer(6000, ENCODER.encode)

ARGUMENTS = st.one_of(
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(),
    st.binary().map(bytearray),
    st.binary().map(memoryview),
)


def wire(packer, *args) -> bytes:
    return b"".join(bytes(buffer) for buffer in packer.pack(*args))


@given(st.sampled_from(["SET", "EVALSHA", b"HSET"]), st.lists(ARGUMENTS, max_size=12))
def test_any_command_is_written_as_redis_py_writes_it(name, args):
    assert wire(CommandPacker(), name, *args) == wire(REDIS_PY, name, *args)


@pytest.mark.parametrize(
    "args",
    [
        ("SCRIPT LOAD", "return 1"),  # a command name of two words is two arguments
        (b"CONFIG GET", "maxmemory"),
        ("SET", "k", "x" * 100_000),  # past redis-py's 6,000-byte buffers
        ("SET", "", "é ✓ \r\n"),
        ("ZADD", "k", -math.inf, 10**30, 1e-7, -0.0),
    ],
)
def test_the_commands_redis_py_packs_apart_are_written_the_same(args):
    assert wire(CommandPacker(), *args) == wire(REDIS_PY, *args)


@pytest.mark.parametrize("wrong", [True, None, ["a"], {"a": 1}])
def test_an_argument_redis_py_refuses_is_refused_with_its_error(wrong):
    with pytest.raises(redis.exceptions.DataError):
        REDIS_PY.pack("SET", "k", wrong)
    with pytest.raises(redis.exceptions.DataError):
        CommandPacker().pack("SET", "k", wrong)


def test_the_apps_client_writes_with_it_and_the_server_reads_every_value(real_redis):
    connection = real_redis.connection_pool.get_connection()
    assert isinstance(connection._command_packer, CommandPacker)
    real_redis.connection_pool.release(connection)
    values = ["é ✓", "a\r\nb", "", 10**20, -3, 0.1]
    real_redis.rpush("resp-test", *values)
    assert real_redis.lrange("resp-test", 0, -1) == [str(value) for value in values]
