"""The benchmarks' own embedded server, in a temporary folder that goes with it."""

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from webapp.storage.embedded import EmbeddedRedis


@contextlib.contextmanager
def embedded_server(prefix: str) -> Iterator[tuple[Path, str]]:
    """A fresh embedded server, stopped on leaving: a temporary folder (which also holds its
    data) and the server's URL."""
    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        server = EmbeddedRedis(data_dir)
        try:
            yield Path(data_dir), server.start()
        finally:
            server.stop()
