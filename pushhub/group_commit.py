"""Group commit: concurrent callers in one process hand their writes to one statement.

A caller submits its item. If no statement of the group is in flight, it runs one for its item and for the
items waiting (the leader); otherwise it waits, and its item goes into the next statement, run by the first
waiter when the statement in flight ends (leadership passes on; the group has no thread of its own). Under a
light load every statement holds one item and nothing waits; under load, the items that arrive while one
statement runs go together in the next, so its fixed costs (the round trip, the executor's start, the
commit's WAL flush, rows that every statement updates) are paid once for all of them. This is PostgreSQL's
own commit grouping, done one step earlier, where whole statements can be merged.

Items whose conflict keys meet an item already in the batch wait for the next one (two uploads of one user,
or one formId in two uploads: the statement could not tell whose row was stored). A batch that fails is
not retried as a batch: each of its callers runs its item alone (``RUN_ALONE``), so an error is the
request's own, as it was without grouping.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

RUN_ALONE = object()  # the result a caller gets when its batch failed: it runs its item itself


class _Waiter:
    __slots__ = ("item", "keys", "woken", "lead", "result", "error")

    def __init__(self, item: Any, keys: frozenset) -> None:
        self.item, self.keys = item, keys
        self.woken = threading.Event()
        self.lead = False
        self.result: Any = RUN_ALONE  # until the batch's statement answers: whatever stops it, nobody is lost
        self.error: BaseException | None = None


class Group:
    """One statement in flight at a time; ``run_batch(items) -> results`` (one result per item, in order)
    runs on the leader's thread, so on its database connection, never inside a caller's transaction (the
    caller checks that). At most ``max_items`` items a statement."""

    def __init__(self, run_batch: Callable[[list], Sequence], max_items: int, in_flight: int = 1) -> None:
        self._run_batch = run_batch
        self._max_items = max_items
        self._in_flight = in_flight
        self._lock = threading.Lock()
        self._running = 0  # statements in flight
        self._waiting: deque[_Waiter] = deque()

    def submit(self, item: Any, keys: frozenset[Hashable] = frozenset()) -> Any:
        me = _Waiter(item, keys)
        with self._lock:
            if self._running >= self._in_flight:
                self._waiting.append(me)
            else:
                self._running += 1
                me.lead = True
        if not me.lead:
            me.woken.wait()
            if not me.lead:  # the leader ran it
                if me.error is not None:
                    raise me.error
                return me.result
        return self._lead(me)

    def _lead(self, me: _Waiter) -> Any:
        batch = [me]
        following: _Waiter | None = None
        try:
            with self._lock:
                taken = set(me.keys)
                for waiter in list(self._waiting):
                    if len(batch) >= self._max_items:
                        break
                    if taken.isdisjoint(waiter.keys):
                        self._waiting.remove(waiter)
                        batch.append(waiter)
                        taken |= waiter.keys
            try:
                results = list(self._run_batch([waiter.item for waiter in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for {len(batch)} items")
            except Exception as exc:
                if len(batch) == 1:
                    me.error = exc
                # else whose item failed it is unknown: each caller runs its own alone (RUN_ALONE stays)
            else:
                for waiter, result in zip(batch, results, strict=True):
                    waiter.result = result
        finally:
            with self._lock:
                if self._waiting:
                    following = self._waiting.popleft()
                    following.lead = True
                else:
                    self._running -= 1
            for waiter in batch[1:]:
                waiter.woken.set()
            if following is not None:
                following.woken.set()
        if me.error is not None:
            raise me.error
        return me.result

    def waiting_count(self) -> int:
        """How many items wait for a statement now."""
        with self._lock:
            return len(self._waiting)
