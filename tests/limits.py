"""The per-visitor limits set out of reach, for the tests of other things: they send far
more than a person would, every guest from loopback. Each limit has tests of its own."""

OUT_OF_REACH = {
    "MODEL_CALLS_PER_MINUTE": 100_000,
    "GUEST_MODEL_CALLS_PER_ADDRESS_PER_MINUTE": 100_000,
    "LIVE_CONVERSATIONS_PER_GUEST": 100_000,
    "LIVE_CONVERSATIONS_PER_ACCOUNT": 100_000,
    "NEW_CONVERSATIONS_PER_MINUTE": 100_000,
    "GUEST_NEW_CONVERSATIONS_PER_ADDRESS_PER_MINUTE": 100_000,
    "RESUME_CODES_PER_HOUR": 100_000,
    "REGISTRATIONS_PER_ADDRESS_PER_HOUR": 100_000,
    "LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE": 100_000,
}
