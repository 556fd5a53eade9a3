"""Shutting down a producer thread that may be blocked on a full bounded queue."""

from __future__ import annotations

import queue
import threading


def stop_producer(worker: threading.Thread, out: queue.Queue, stop: threading.Event) -> None:
    """Signal ``stop`` and drain ``out`` until ``worker`` ends, so a blocked ``put`` cannot hang the join."""
    stop.set()
    while worker.is_alive():
        try:
            out.get_nowait()
        except queue.Empty:
            worker.join(timeout=0.05)
