"""Run a producer in a background thread, one bounded queue ahead of its consumer.

Extraction reads image shards ahead of the encoder and the loader assembles batches ahead of the
decoder with the same helper: :func:`background` iterates the producer in a thread, hands its items
(and its exception, if it raises) to the consumer in order, and, when the consumer leaves early, stops
the thread even if it is blocked on a full queue.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

_END = object()
"""Queue sentinel: the producer is exhausted."""


@dataclass(frozen=True)
class _Failure:
    """An exception raised by the producer, carried to the consumer (an item may itself be an exception)."""

    error: BaseException


def _produce(items: Iterable[T], out: queue.Queue, stop: threading.Event) -> None:
    """Producer thread: put every item on ``out`` until exhausted, failed or told to ``stop``."""
    source = iter(items)
    try:
        for item in source:
            out.put(item)
            if stop.is_set():
                break
    except BaseException as err:  # handed to the consumer, which re-raises
        out.put(_Failure(err))
    finally:
        close = getattr(source, "close", None)
        if close is not None:  # a generator's own cleanup (e.g. its reader pool) runs in this thread
            close()
    out.put(_END)


def _consume(out: queue.Queue) -> Iterator[T]:
    while (item := out.get()) is not _END:
        if isinstance(item, _Failure):
            raise item.error
        yield item


def _stop(worker: threading.Thread, out: queue.Queue, stop: threading.Event) -> None:
    """Signal ``stop`` and drain ``out`` until ``worker`` ends, so a blocked ``put`` cannot hang the join."""
    stop.set()
    while worker.is_alive():
        try:
            out.get_nowait()
        except queue.Empty:
            worker.join(timeout=0.05)


@contextlib.contextmanager
def background(items: Iterable[T], depth: int) -> Iterator[Iterator[T]]:
    """Iterate ``items`` in a daemon thread, at most ``depth`` items ahead of the consumer.

    Yields an iterator over the same items in the same order; an exception raised by the producer is
    re-raised by that iterator at the position where it happened. Leaving the ``with`` block (at the end,
    early, or by an exception) stops the producer and waits for its thread to end.
    """
    out: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    worker = threading.Thread(target=_produce, args=(items, out, stop), daemon=True)
    worker.start()
    try:
        yield _consume(out)
    finally:
        _stop(worker, out, stop)
