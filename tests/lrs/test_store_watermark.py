"""The watermark never passes a statement whose write has not finished."""

from lrs.store import StatementStore, utcnow

ACTOR = {"mbox": "mailto:ana@example.edu"}
VERB = {"id": "http://adlnet.gov/expapi/verbs/completed"}


def stmt(n: int) -> dict:
    return {"actor": ACTOR, "verb": VERB, "object": {"id": f"https://example.com/a/{n}"}}


def test_watermark_waits_for_a_late_write_and_then_advances(db):
    store = StatementStore(db)
    store.ensure_indexes()
    authority = {"mbox": "mailto:lrs@example.edu"}
    store.insert([stmt(1), stmt(2)], authority=authority, credential_key="k")
    store.flush()
    assert store.watermark().seq == 2

    # A slow writer has its range (3..4) but has not written yet ...
    late_start, late_token, _ = store._allocate(2, utcnow())
    assert late_start == 3
    # ... while a faster writer stores 5..6.
    store.insert([stmt(5), stmt(6)], authority=authority, credential_key="k")
    store.flush()
    assert store.last_seq() == 6
    assert store.watermark().seq == 2, "the watermark skipped a write still in flight"

    store._finish(late_token)
    store.flush()
    assert store.watermark().seq == 6


def test_finished_ranges_are_released_without_an_explicit_flush(db):
    import time

    store = StatementStore(db)
    store.ensure_indexes()
    store.insert([stmt(1)], authority={"mbox": "mailto:lrs@example.edu"}, credential_key="k")
    deadline = time.monotonic() + 5
    while store.watermark().seq != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.watermark().seq == 1


def test_two_writers_creating_the_counter_at_once_both_get_their_range(db):
    """On a fresh database two writers create the sequence counter at the same moment.
    SecantusDB applies both upserts but often returns no document to one of them (and
    MongoDB fails one with a duplicate key): each must still get its own range, and the
    watermark must reach the end (no range left pending)."""
    import threading

    for i in range(20):
        fresh = db.client[f"{db.name}_race{i}"]
        stores = [StatementStore(fresh), StatementStore(fresh)]
        barrier = threading.Barrier(2)
        starts, errors = [], []

        def allocate(store, barrier=barrier, starts=starts, errors=errors):
            try:
                barrier.wait(5)
                start, token, _ = store._allocate(3, utcnow())
                starts.append(start)
                store._finish(token)
                store.flush()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=allocate, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        db.client.drop_database(fresh.name)
        assert not errors, errors
        assert sorted(starts) == [1, 4]
