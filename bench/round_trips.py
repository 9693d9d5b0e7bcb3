"""Counting round trips: every network write of a redis-py connection is one round trip."""

import contextlib
import re
from collections.abc import Iterator
from unittest import mock

from redis.connection import Connection

COMMAND_NAME = re.compile(rb"\*\d+\r\n\$\d+\r\n([^\r]+)")


@contextlib.contextmanager
def recorded_writes() -> Iterator[list[str]]:
    """Record the first command name of every write; a pipeline is one write of all its commands."""
    writes: list[str] = []
    send = Connection.send_packed_command

    def counting_send(self, command, check_health=True):
        name = COMMAND_NAME.match(bytes(command[0] if isinstance(command, list) else command))
        writes.append(name.group(1).decode().upper() if name else "?")
        return send(self, command, check_health)

    with mock.patch.object(Connection, "send_packed_command", counting_send):
        yield writes
