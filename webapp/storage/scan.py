"""SCAN that works the same on one server and on a Redis Cluster.

A cluster has one keyspace per master, each walked with its own cursor. A page of the admin
console carries one integer cursor in its "next page" link, so on a cluster that integer
also says which master it is walking: ``master cursor * masters + master number``, masters
numbered in the order of their addresses. It is 0 only at the start and the end, as on one
server. A change of the cluster's masters between two pages (a failover, slots moved) may
skip or repeat keys; on one server SCAN can only repeat them.
"""

import redis
from redis.cluster import RedisCluster


def _masters(r: RedisCluster) -> list:
    return sorted(r.get_primaries(), key=lambda node: node.name)


def scan_page(
    r: redis.Redis | RedisCluster, cursor: int, *, match: str, count: int, _type: str | None = None
) -> tuple[int, list[str]]:
    """One SCAN call from ``cursor`` (0: the start); returns the cursor to carry on from
    (0: the end) and the keys found."""
    if not isinstance(r, RedisCluster):
        return r.scan(cursor, match=match, count=count, _type=_type)
    masters = _masters(r)
    master_cursor, number = divmod(cursor, len(masters))
    cursors, found = r.scan(
        master_cursor, match=match, count=count, _type=_type, target_nodes=masters[number]
    )
    (master_cursor,) = cursors.values()
    if master_cursor == 0:
        # This master is done: the next call starts the next one, if there is one.
        number += 1
        return (number if number < len(masters) else 0), found
    return master_cursor * len(masters) + number, found
