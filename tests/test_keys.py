"""Key names are part of the data format: pin them exactly."""

from webapp.storage import keys


def test_conversation_keys_share_one_hash_tag():
    assert keys.conversation_keys("abc") == (
        "rc:conv:{abc}:meta",
        "rc:conv:{abc}:messages",
        "rc:conv:{abc}:session",
        "rc:conv:{abc}:recent_ids",
        "rc:conv:{abc}:draft",
        "rc:conv:{abc}:run",
        "rc:conv:{abc}:codes",
        "rc:conv:{abc}:runs",
    )
    assert keys.run_events("abc", "r1") == "rc:conv:{abc}:run:r1:events"
    assert keys.conversation_search("abc") == "rc:conv:{abc}:search"


def test_owner_index_key_and_its_scan_pattern():
    assert keys.owner_conversations("guest:xyz") == "rc:owner:{guest:xyz}:conversations"
    assert keys.OWNER_CONVERSATIONS_PATTERN == "rc:owner:*:conversations"


def test_conversation_scan_patterns_and_the_id_in_a_key():
    assert keys.CONVERSATION_META_PATTERN == "rc:conv:*:meta"
    assert keys.CONVERSATION_KEYS_PATTERN == "rc:conv:*"
    assert keys.conversation_keys_pattern("abc") == "rc:conv:{abc}:*"
    assert keys.conversation_keys_pattern("a*b?") == "rc:conv:{a\\*b\\?}:*"
    assert keys.conversation_id_of("rc:conv:{abc}:run:xyz:events") == "abc"
    assert keys.conversation_id_of("rc:owner:{guest:x}:conversations") is None


def test_the_deadline_mirrors_share_one_hash_tag():
    assert keys.DEADLINES_SESSIONS == "rc:deadlines:{deadlines}:sessions"
    assert {key.split("}")[0] for key in keys.DEADLINES} == {"rc:deadlines:{deadlines"}
    assert set(keys.DEADLINES_FORGOTTEN_TOGETHER) == set(keys.DEADLINES)
    assert keys.DEADLINES_FORGOTTEN_TOGETHER[-1] == keys.DEADLINES_OWNERS  # the hash last


def test_admin_and_metrics_keys():
    assert keys.ADMIN_AUDIT == "rc:admin:audit"
    assert keys.METRICS_COUNTERS == "rc:metrics:counters"
    assert keys.resume_failures_in_hour(493_000) == "rc:metrics:resume-failures:493000"
    assert keys.RESUME_CODES_PATTERN == "rc:code:*"


def test_run_index_member_and_resume_code_key():
    assert keys.running_run_member("abc", "r1") == "abc r1"
    assert keys.resume_code("f00d") == "rc:code:{f00d}"


def test_rate_limit_windows_are_tagged_by_client():
    assert (
        keys.rate_limit_window("203.0.113.7", "resume.redeem", 10, "minute")
        == "rc:limits:{203.0.113.7}:resume.redeem:10/minute"
    )
