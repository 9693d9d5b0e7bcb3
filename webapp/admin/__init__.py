"""The admin console's domain: what it lists (``listing``) and what it does, audited
(``audit``)."""

from dataclasses import dataclass

import redis

from webapp import metrics, quotas
from webapp.admin import audit, listing


@dataclass(frozen=True)
class Console:
    """Everything the console page shows."""

    page: listing.Page
    state_counts: dict[str, int]
    resume_failures: list[metrics.HourCount]
    audit: list[audit.AuditEntry]
    usage: list[quotas.Usage]
    """What the owner filtered on uses of its quotas (none without that filter)."""


def read_console(
    r: redis.Redis,
    *,
    cursor: int,
    page_size: int,
    state: str | None,
    owner: str | None,
    limits: quotas.Limits,
    retention: int,
) -> Console:
    """The console's page of conversations, the overview, the latest audit entries, and
    the usage of the owner filtered on."""
    return Console(
        page=listing.list_conversations(r, cursor, page_size, state, owner),
        state_counts=listing.count_states(r),
        resume_failures=metrics.resume_failures_by_hour(r),
        audit=audit.audit_entries(r),
        usage=quotas.usage(r, limits, owner, retention) if owner else [],
    )
