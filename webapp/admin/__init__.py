"""The admin console's domain: what it lists (``listing``) and what it does, audited
(``audit``)."""

from dataclasses import dataclass

import redis

from webapp import metrics
from webapp.admin import audit, listing


@dataclass(frozen=True)
class Console:
    """Everything the console page shows."""

    page: listing.Page
    state_counts: listing.StateCounts
    resume_failures: list[metrics.HourCount]
    audit: list[audit.AuditEntry]


def read_console(
    r: redis.Redis,
    *,
    cursor: int,
    page_size: int,
    state: str | None,
    owner: str | None,
    cache_seconds: int,
) -> Console:
    """The console's page of conversations, the overview, and the latest audit entries."""
    return Console(
        page=listing.list_conversations(r, cursor, page_size, state, owner),
        state_counts=listing.count_states(r, cache_seconds),
        resume_failures=metrics.resume_failures_by_hour(r),
        audit=audit.audit_entries(r),
    )
