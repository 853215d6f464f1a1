"""pushhub.group_commit with real threads: a lone caller runs its own statement; callers that arrive while one
runs share the next; conflicting items wait for a statement of their own; a failed batch sends each caller
back to run alone; nobody waits forever."""

from __future__ import annotations

import threading
import time

import pytest

from pushhub.group_commit import RUN_ALONE, Group


class Recorder:
    """A batch function that records its batches and can hold the first one until released."""

    def __init__(self, hold_first: bool = False, fail_when=lambda items: False) -> None:
        self.batches: list[list[str]] = []
        self.running = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_when = fail_when

    def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        self.running.set()
        assert self.release.wait(timeout=10)
        if self.fail_when(items):
            raise RuntimeError("the statement failed")
        return [f"stored {item}" for item in items]


def submit_in_thread(
    group: Group, item: str, keys=frozenset(), answers: dict | None = None
) -> threading.Thread:
    def run():
        try:
            answers[item] = group.submit(item, keys)
        except Exception as exc:  # asserted by the test
            answers[item] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def hold_a_statement_and_queue(
    group: Group, recorder: Recorder, first: str, queued: list[tuple[str, frozenset]]
):
    """The first caller's statement runs (held); the others arrive meanwhile and wait."""
    answers: dict = {}
    threads = [submit_in_thread(group, first, frozenset({first}), answers)]
    assert recorder.running.wait(timeout=10)
    for n, (item, keys) in enumerate(queued, 1):
        threads.append(submit_in_thread(group, item, keys, answers))
        wait_until(lambda n=n: group.waiting_count() == n)  # so they queue in this order
    recorder.release.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
    return answers


def test_a_lone_caller_runs_its_own_statement_at_once():
    recorder = Recorder()
    group = Group(recorder, max_items=8)
    assert group.submit("a", frozenset({"a"})) == "stored a"
    assert group.submit("b", frozenset({"b"})) == "stored b"
    assert recorder.batches == [["a"], ["b"]]


def test_callers_arriving_during_a_statement_share_the_next_one():
    recorder = Recorder(hold_first=True)
    group = Group(recorder, max_items=8)
    answers = hold_a_statement_and_queue(
        group, recorder, "a", [("b", frozenset({"b"})), ("c", frozenset({"c"})), ("d", frozenset({"d"}))]
    )
    assert recorder.batches == [["a"], ["b", "c", "d"]]
    assert answers == {item: f"stored {item}" for item in "abcd"}  # each caller gets its own answer
    assert group.waiting_count() == 0


def test_an_item_that_conflicts_with_the_batch_waits_for_the_next_statement():
    recorder = Recorder(hold_first=True)
    group = Group(recorder, max_items=8)
    answers = hold_a_statement_and_queue(
        group,
        recorder,
        "a",
        [
            ("b", frozenset({"user1", "formidX"})),
            ("c", frozenset({"user2", "formidX"})),  # the same formId as b
            ("d", frozenset({"user1"})),  # the same user as b
            ("e", frozenset({"user3"})),
        ],
    )
    assert recorder.batches == [["a"], ["b", "e"], ["c", "d"]]
    assert set(answers.values()) == {f"stored {item}" for item in "abcde"}


def test_a_statement_holds_at_most_max_items():
    recorder = Recorder(hold_first=True)
    group = Group(recorder, max_items=2)
    hold_a_statement_and_queue(group, recorder, "a", [(item, frozenset({item})) for item in "bcde"])
    assert recorder.batches == [["a"], ["b", "c"], ["d", "e"]]


def test_a_failed_batch_sends_each_caller_back_to_run_alone_and_a_lone_failure_is_its_callers():
    recorder = Recorder(hold_first=True, fail_when=lambda items: len(items) > 1)
    group = Group(recorder, max_items=8)
    answers = hold_a_statement_and_queue(
        group, recorder, "a", [("b", frozenset({"b"})), ("c", frozenset({"c"}))]
    )
    assert answers == {"a": "stored a", "b": RUN_ALONE, "c": RUN_ALONE}

    lone = Group(Recorder(fail_when=lambda items: True), max_items=8)
    with pytest.raises(RuntimeError, match="the statement failed"):
        lone.submit("z")
    assert lone.waiting_count() == 0
    with pytest.raises(RuntimeError):
        lone.submit("y")  # the group is free again: led at once, not left waiting behind the failed one


def test_with_two_in_flight_a_second_caller_does_not_wait_for_the_first():
    recorder = Recorder(hold_first=True)
    group = Group(recorder, max_items=8, in_flight=2)
    answers: dict = {}
    first = submit_in_thread(group, "a", frozenset({"a"}), answers)
    assert recorder.running.wait(timeout=10)
    second = submit_in_thread(group, "b", frozenset({"b"}), answers)
    wait_until(lambda: len(recorder.batches) == 2)  # its own statement, while the first is held
    assert group.waiting_count() == 0
    recorder.release.set()
    for thread in (first, second):
        thread.join(timeout=10)
    assert recorder.batches == [["a"], ["b"]]
    assert answers == {"a": "stored a", "b": "stored b"}
