"""Replies: asking the model to write, as one call from a view.

Every model call (a reply, Continue, Retry, a catch-up, a restore from a browser's copy)
first takes one of its asker's model-call slots (see quotas), and gives it back when no call
is made after all (a repeated message, a reply already being written, a session that has
ended); a new conversation first takes its quota's slots too. A reply is a run: started
atomically with the user's message, then written by this process's worker in the
background.
"""

import contextlib
from collections.abc import Iterator, Sequence

import redis

from webapp import conversations, lifecycle, metrics, quotas, rate_limits, runs, summaries
from webapp.conversations import Conversation, Lifetimes, Message
from webapp.llm import Provider
from webapp.run_worker import RunWorker
from webapp.runs import Run, RunInProgress, RunSettings, SessionExpired


class UnknownRun(LookupError):
    """The run named is not the conversation's latest."""


class ModelCall:
    """The model-call slots taken for one call about to be made: the asker's, and for a
    guest the client address's too (a fresh cookie is a new guest, not a new address)."""

    def __init__(self, r: redis.Redis, slots: list[rate_limits.Slot]) -> None:
        self._r, self._slots = r, slots

    def give_back(self) -> None:
        """No call is made after all: free the slots (once, however often asked)."""
        slots, self._slots = self._slots, []
        for slot in slots:
            rate_limits.give_back_slot(self._r, slot)


class Replies:
    """The model calls people ask for, with the clients and settings built at start-up."""

    def __init__(
        self,
        r: redis.Redis,
        provider: Provider,
        worker: RunWorker,
        lifetimes: Lifetimes,
        run_settings: RunSettings,
        limits: quotas.Limits,
    ) -> None:
        self.r, self.provider, self.worker = r, provider, worker
        self.lifetimes, self.run_settings, self.limits = lifetimes, run_settings, limits

    @contextlib.contextmanager
    def _model_call(self, asker: str, address: str) -> Iterator[ModelCall]:
        """Take one of ``asker``'s model-call slots for the block (and, for a guest, one of
        its address's), or raise QuotaReached. The slots are given back if the block
        raises: no call was made."""
        call = ModelCall(self.r, quotas.take_model_call(self.r, self.limits, asker, address))
        try:
            yield call
        except Exception:
            call.give_back()
            raise

    def _start(self, call: ModelCall, conversation_id: str, owner: str, **how) -> None:
        """Start a run (see runs.start_run) with the slots taken, and hand it to the worker."""
        run = runs.start_run(
            self.r, conversation_id, owner, self.lifetimes, self.run_settings, **how
        )
        if run is None:
            call.give_back()  # a repeat: its reply is under way
        else:
            self.worker.submit(run, how.get("prefix", ""))

    def start_conversation(self, owner: str, address: str, message: Message) -> str:
        """A new conversation of ``owner`` whose reply to ``message`` is being written; its
        id. Raises QuotaReached (and creates nothing)."""
        with (
            self._new_conversation(owner, address) as conversation_id,
            self._model_call(owner, address) as call,
        ):
            conversations.create_conversation(self.r, owner, self.lifetimes, conversation_id)
            self._start(call, conversation_id, owner, user_message=message)
        return conversation_id

    def _new_conversation(self, owner: str, address: str):
        """See quotas.new_conversation."""
        return quotas.new_conversation(
            self.r, self.limits, owner, address, self.lifetimes.transcript_retention
        )

    def send(self, conversation: Conversation, address: str, message: Message) -> None:
        """Store ``message`` and start its reply. Raises QuotaReached, RunInProgress,
        SessionExpired or ConversationGone; a repeat of a message sent already does nothing."""
        with self._model_call(conversation.owner, address) as call:
            try:
                self._start(call, conversation.id, conversation.owner, user_message=message)
            except RunInProgress:
                # Its writer may have died: a stale run ends when seen, and the send goes on.
                latest = runs.seen_run(self.r, conversation.id, self.lifetimes, self.run_settings)
                if latest is not None and latest.running:
                    raise
                self._start(call, conversation.id, conversation.owner, user_message=message)

    def latest_run(self, conversation: Conversation, run_id: str) -> Run:
        """The conversation's latest run, if it is ``run_id``; UnknownRun otherwise."""
        run = runs.seen_run(self.r, conversation.id, self.lifetimes, self.run_settings)
        if run is None or run.id != run_id:
            raise UnknownRun(run_id)
        return run

    def redo(
        self, conversation: Conversation, address: str, run_id: str, *, carry_on: bool
    ) -> None:
        """Write the reply of a run that ended early again: carrying on from its partial
        text, or afresh. Does nothing if it is done or running, if another tab pressed it
        first, or if the session ended meanwhile (the page then offers to catch up).
        Raises UnknownRun or QuotaReached."""
        run = self.latest_run(conversation, run_id)
        if run.status not in runs.ENDED_EARLY:
            return
        prefix = ""
        if carry_on:
            last = conversations.read_messages(self.r, conversation.id, -1, -1)
            if last and last[0].id == run.message_id:
                # As written, trailing space included: the model carries on after it.
                prefix = last[0].content
        with (
            contextlib.suppress(RunInProgress, SessionExpired),
            self._model_call(conversation.owner, address) as call,
        ):
            self._start(call, conversation.id, conversation.owner, replacing=run, prefix=prefix)

    def stop(self, conversation: Conversation, run_id: str) -> None:
        """Stop the run from any tab, keeping what it wrote. Raises UnknownRun."""
        run = self.latest_run(conversation, run_id)
        if run.running:
            runs.request_stop(self.r, run, self.lifetimes, self.run_settings)

    def catch_up(self, conversation: Conversation, address: str) -> None:
        """Where were we? Start summarising the conversation in the background; a new
        session starts from the summary (see runs.write_catch_up). Nothing starts if a
        session is alive again, or another tab's catch-up is under way.
        Raises QuotaReached or ConversationGone."""
        with (
            contextlib.suppress(RunInProgress),
            self._model_call(conversation.owner, address) as call,
        ):
            self._start(call, conversation.id, conversation.owner, kind=runs.CATCH_UP)

    def restore(self, owner: str, address: str, copy: Sequence[Message]) -> str:
        """A new conversation of ``owner`` caught up from a browser's copy of one that is
        gone (see lifecycle.parse_browser_copy); its id. Raises QuotaReached."""
        with (
            self._new_conversation(owner, address) as conversation_id,
            self._model_call(owner, address),
        ):
            _, summary = lifecycle.restore_from_copy(
                self.r, self.provider, owner, copy, self.lifetimes, conversation_id
            )
        metrics.count_catch_up(self.r, summaries.BROWSER, summary.tokens, summary.replaced_tokens)
        return conversation_id
