"""Run the mapping worker until it has read everything the LRS stored, for tests.

A module of its own (importable because pytest puts ``tests/`` on sys.path for the root
conftest), shared by the engine, demo and LTI tests.
"""

import time

from lrs.store import StatementStore
from mappings.worker import WORKER_ID, Worker


def drain(db) -> None:
    """Wait for the LRS watermark to reach the last statement (the app releases finished
    ranges within 50 ms), then run the worker up to it."""
    store = StatementStore(db)
    deadline = time.monotonic() + 10
    while store.watermark().seq < store.last_seq():
        assert time.monotonic() < deadline, "the LRS watermark did not advance"
        time.sleep(0.01)
    worker = Worker(db, name="test")
    try:
        for _ in range(200):
            worker.run_once()
            state = db["worker_state"].find_one({"_id": WORKER_ID}) or {}
            if state.get("position", 0) >= store.watermark().seq:
                return
        raise AssertionError("the mapping worker did not catch up")
    finally:
        worker.release()
