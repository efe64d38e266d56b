"""The records the engine writes load through ``mappings.records`` (what pages, tools and
the admin read) and their stored documents through the ``Progress`` model."""

from __future__ import annotations

from test_engine_e2e import LEAVES, catalog, drain, post, quiz  # noqa: F401  (catalog: fixture)

from mappings import evidence as evidence_store
from mappings import records
from mappings.models import Progress


def test_stored_records_load_through_records_and_the_progress_model(
        client, xapi_headers, db, catalog):  # noqa: F811
    post(client, xapi_headers, [quiz("ana@school.example.edu", code, 0.9,
                                     when=f"2026-09-{i + 1:02d}T10:00:00Z")
                                for i, code in enumerate(LEAVES[:10])])
    drain(db)
    stored = list(Progress.objects)
    assert stored and Progress.objects.count() == db["progress"].count_documents({})
    for doc in stored:
        assert doc.identifier == f"{doc.learner}|{doc.framework}" and doc.updated_at
        assert records.body_of({"s": doc.s})["mastery"]

    held = records.load(db, db["progress"].distinct("learner"))
    mastery = [m for r in held.values() for m in r.mastery.values()]
    assert len(mastery) > 10 and all(m["learner"] for m in mastery)
    rollups = [m for m in mastery if m["from_children"] and m["children"]]
    assert rollups and any(m["evidence"] for m in rollups)
    evidence = {e["_id"] for e in evidence_store.all_records(db)}
    assert all(set(m["evidence"]) <= evidence for m in mastery)
    (credit,) = [c for r in held.values() for c in r.credits.values()]
    assert credit["status"] == "awarded" and credit["evidence_by"]
    assert credit["transitions"] == 1
    assert all(set(ids) <= evidence for _, ids in credit["evidence_by"])
