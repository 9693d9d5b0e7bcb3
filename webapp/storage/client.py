"""The client of one server (a plain one, or the primary that Sentinel names): redis-py's,
with a pipeline that sends its commands and reads their answers without redis-py's
per-command bookkeeping. Every page and every write is one or a few pipelines."""

import redis
import redis.client
from redis.exceptions import ResponseError


class Pipeline(redis.client.Pipeline):
    """redis-py's pipeline, executed leaner. redis-py 8 inspects every queued command for
    its HIMPORT extension (which the app never sends) and records each execution for its
    observability hooks (which the app does not use); this one does neither. The commands,
    the answers' parsing, the retries and the errors stay redis-py's: a connection that
    fails is dropped and the whole pipeline sent again, as redis-py does. A transaction
    (MULTI) is executed by redis-py's own code."""

    def execute(self, raise_on_error: bool = True) -> list:
        stack = self.command_stack
        if not stack:
            return []
        transaction = self.transaction or self.explicit_transaction
        exchange = self._execute_transaction if transaction else self._exchange
        connection = self.connection = self.connection_pool.get_connection()
        try:
            return connection.retry.call_with_retry(
                lambda: exchange(connection, stack, raise_on_error),
                lambda _error: connection.disconnect(),
            )
        finally:
            self.reset()  # gives the connection back to the pool

    def _exchange(self, connection, stack: list, raise_on_error: bool) -> list:
        """Send every command at once, then read each one's answer (an error as its
        exception, in its place)."""
        connection.send_packed_command(connection.pack_commands([args for args, _ in stack]))
        answers = []
        for args, options in stack:
            try:
                answers.append(self.parse_response(connection, args[0], **options))
            except ResponseError as error:
                answers.append(error)
        if raise_on_error:
            self.raise_first_error(stack, answers)
        return answers


class Client(redis.Redis):
    """redis-py's client, whose pipelines are ``Pipeline``s."""

    def pipeline(self, transaction: bool = True, shard_hint=None) -> Pipeline:
        return Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
