"""Deleting conversations: every key of each, and what points at it from elsewhere, without
walking the keyspace.

A conversation lists everything of its own that is not named by its id alone: the runs
whose events may still exist, and the resume codes issued for it. So a deletion reads those
lists, deletes the conversation's keys in one script that checks the lists are still what
was read, then removes what lives under other hash tags (its codes, its entry in its
owner's index and in the index of running runs, and the share links made from it).
Functions take their Redis client as an argument and know nothing of HTTP.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import redis

from webapp import deadlines, shares
from webapp.lifecycle import EXPIRED
from webapp.storage import keys
from webapp.storage.scripts import DELETE_CONVERSATION, execute_pipeline

BATCH = 100
"""Conversations deleted per round trip."""
ATTEMPTS = 3
"""Tries for a conversation whose runs change between the read and the delete."""


@dataclass(frozen=True)
class Deleted:
    conversations: int
    keys: int


def delete_conversation(r: redis.Redis, conversation_id: str, owner: str) -> Deleted:
    """Delete one conversation of ``owner``, if it is still theirs."""
    return delete_conversations(r, {conversation_id: owner}, only_owner=owner)


def delete_conversations(
    r: redis.Redis,
    owners: Mapping[str, str],
    *,
    only_owner: str = "",
    only_expired: bool = False,
) -> Deleted:
    """Delete every key of each conversation in ``owners`` (id -> owner) and what points at
    it, each conversation at once; with ``only_owner`` or ``only_expired``, only those still
    so at that moment (others are left whole)."""
    conversations = deleted = 0
    ids = list(owners)
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        for _ in range(ATTEMPTS):
            done, batch = _delete_batch(r, batch, owners, only_owner, only_expired)
            conversations += done.conversations
            deleted += done.keys
            if not batch:
                break
    return Deleted(conversations, deleted)


def _delete_batch(
    r: redis.Redis,
    batch: list[str],
    owners: Mapping[str, str],
    only_owner: str,
    only_expired: bool,
) -> tuple[Deleted, list[str]]:
    """One try at a batch: the deletions done, and the ids whose runs changed meanwhile."""
    pipe = r.pipeline(transaction=False)
    for conversation_id in batch:
        pipe.zrange(keys.conversation_runs(conversation_id), 0, -1)
        pipe.hget(keys.conversation_run(conversation_id), "id")
    answers = pipe.execute()
    runs_of = {
        conversation_id: sorted({*listed, *([latest] if latest else [])})
        for conversation_id, listed, latest in zip(batch, answers[::2], answers[1::2], strict=True)
    }

    def queue_deletes(pipe):
        for conversation_id in batch:
            run_ids = runs_of[conversation_id]
            DELETE_CONVERSATION.queue(
                pipe,
                [
                    *keys.conversation_keys(conversation_id),
                    *(keys.run_events(conversation_id, run_id) for run_id in run_ids),
                    keys.conversation_search(conversation_id),
                ],
                [only_owner, EXPIRED if only_expired else "", *run_ids],
            )

    results = execute_pipeline(r, queue_deletes)
    changed = [
        cid for cid, (outcome, *_) in zip(batch, results, strict=True) if outcome == "changed"
    ]
    done = {
        cid: result for cid, result in zip(batch, results, strict=True) if result[0] == "deleted"
    }
    if not done:
        return Deleted(0, 0), changed
    pipe = r.pipeline(transaction=False)
    code_hashes = [code_hash for result in done.values() for code_hash in result[2:]]
    for code_hash in code_hashes:  # one DEL each: every code has a hash tag of its own
        pipe.delete(keys.resume_code(code_hash))
    for conversation_id in done:
        pipe.zrem(keys.owner_conversations(owners[conversation_id]), conversation_id)
        members = [
            keys.running_run_member(conversation_id, run) for run in runs_of[conversation_id]
        ]
        if members:
            pipe.zrem(keys.RUNS_RUNNING, *members)
    deadlines.queue_forget(pipe, list(done))
    codes_deleted = sum(pipe.execute()[: len(code_hashes)])
    links_ended = shares.revoke_for_conversations(r, {cid: owners[cid] for cid in done})
    keys_deleted = sum(result[1] for result in done.values()) + codes_deleted + links_ended
    return Deleted(sum(1 for result in done.values() if result[1]), keys_deleted), changed
