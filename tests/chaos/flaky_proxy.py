"""A TCP proxy in front of a Redis server that drops connections at the worst moment: after
the server has run a request, before its reply reaches the client."""

import select
import socket
import threading

POLL_SECONDS = 0.1
"""How often an idle relay looks whether the proxy is closing."""


def split_commands(buffer: bytes) -> tuple[list[list[bytes]], int]:
    """The complete RESP commands at the start of ``buffer`` and how many bytes they take."""
    commands = []
    used = 0
    while (parsed := _parse_command(buffer, used)) is not None:
        command, used = parsed
        commands.append(command)
    return commands, used


def _parse_command(buffer: bytes, start: int) -> tuple[list[bytes], int] | None:
    """One command (an array of bulk strings, as clients send) and where it ends, or None
    while it is incomplete."""
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    if buffer[start : start + 1] != b"*":
        raise ValueError(f"not a RESP command: {buffer[start : start + 20]!r}")
    position = line_end + 2
    arguments = []
    for _ in range(int(buffer[start + 1 : line_end])):
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        length = int(buffer[position + 1 : line_end])
        data_start = line_end + 2
        if len(buffer) < data_start + length + 2:
            return None
        arguments.append(buffer[data_start : data_start + length])
        position = data_start + length + 2
    return arguments, position


class FlakyProxy:
    """Relays clients to a Redis server; every ``drop_every``-th ``command`` it sees (of
    ``script`` only, if given) is forwarded, and once the server starts answering, both
    connections are closed instead of relaying the answer: the command ran, but the client
    never hears so.

    Clients must wait for each reply before sending more (as redis-py does), so that the
    first bytes back after the chosen command belong to it.
    """

    def __init__(
        self, upstream_port: int, command: bytes, drop_every: int, script: str | None = None
    ) -> None:
        self.upstream_port = upstream_port
        self.command = command.upper()
        self.script = script.encode() if script else None
        """With EVALSHA, the SHA of the one script whose calls count (None: every script's)."""
        self.drop_every = drop_every
        self.seen: list[list[bytes]] = []
        """Every ``command`` sent to the server, with its arguments, in arrival order."""
        self.cut: list[list[bytes]] = []
        """The commands whose connections were cut after the server ran them."""
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._relays: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> "FlakyProxy":
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closing.set()
        self._acceptor.join()
        self._listener.close()
        for relay in self._relays:
            relay.join()

    def _accept(self) -> None:
        self._listener.settimeout(POLL_SECONDS)
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            relay = threading.Thread(target=self._relay, args=(client, upstream), daemon=True)
            self._relays.append(relay)
            relay.start()

    def _chosen_for_drop(self, command: list[bytes]) -> bool:
        """Record a command and tell whether its connection is the one to cut."""
        if command[0].upper() != self.command or (self.script and command[1] != self.script):
            return False
        with self._lock:
            self.seen.append(command)
            return self.drop_every > 0 and len(self.seen) % self.drop_every == 0

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        unparsed = b""
        cut_after: list[bytes] | None = None
        with client, upstream:
            while not self._closing.is_set():
                readable, _, _ = select.select([client, upstream], [], [], POLL_SECONDS)
                if upstream in readable:
                    answer = upstream.recv(65536)
                    if cut_after is not None:
                        with self._lock:
                            self.cut.append(cut_after)
                        return
                    if not answer:
                        return
                    client.sendall(answer)
                if client in readable:
                    request = client.recv(65536)
                    if not request:
                        return
                    unparsed += request
                    commands, used = split_commands(unparsed)
                    unparsed = unparsed[used:]
                    for command in commands:
                        if self._chosen_for_drop(command):
                            cut_after = command
                    upstream.sendall(request)
