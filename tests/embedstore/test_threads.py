"""The background iterator: same items in order, producer errors re-raised, early exit ends the thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from embedstore.threads import background


def test_items_arrive_in_order_and_complete() -> None:
    with background(iter(range(100)), depth=3) as items:
        assert list(items) == list(range(100))


def test_an_item_that_is_an_exception_is_passed_not_raised() -> None:
    err = ValueError("an item")
    with background([err], depth=1) as items:
        assert list(items) == [err]


def test_a_producer_error_is_raised_in_the_consumer_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("reader failed")

    seen = []
    with pytest.raises(RuntimeError, match="reader failed"), background(failing(), depth=1) as items:
        for item in items:
            seen.append(item)
    assert seen == [1, 2]


def test_leaving_early_stops_a_producer_blocked_on_a_full_queue_and_closes_it() -> None:
    produced, closed = [], threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                produced.append(n)
                yield n
                n += 1
        finally:
            closed.set()

    before = threading.active_count()
    with background(endless(), depth=2) as items:
        assert next(items) == 0
        time.sleep(0.05)  # let the producer fill the queue and block on put
    assert closed.is_set()  # the producer's cleanup ran before the with block returned
    assert threading.active_count() == before
    count = len(produced)
    time.sleep(0.05)
    assert len(produced) == count <= 5  # nothing runs on after the stop


def test_an_error_in_the_consumer_also_stops_the_producer() -> None:
    closed = threading.Event()

    def slow() -> Iterator[int]:
        try:
            yield from range(10**6)
        finally:
            closed.set()

    with pytest.raises(KeyError), background(slow(), depth=1) as items:
        next(items)
        raise KeyError("consumer")
    assert closed.is_set()
