"""Key names are part of the data format: pin them exactly."""

from webapp.storage import keys


def test_conversation_keys_share_one_hash_tag():
    assert keys.conversation_keys("abc") == (
        "rc:conv:{abc}:meta",
        "rc:conv:{abc}:messages",
        "rc:conv:{abc}:session",
        "rc:conv:{abc}:recent_ids",
    )


def test_owner_index_key_and_its_scan_pattern():
    assert keys.owner_conversations("guest:xyz") == "rc:owner:{guest:xyz}:conversations"
    assert keys.OWNER_CONVERSATIONS_PATTERN == "rc:owner:*:conversations"
