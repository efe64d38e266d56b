"""The records the engine writes through pymongo load through their mongoengine models,
which pages, tools and the admin use."""

from __future__ import annotations

from test_engine_e2e import LEAVES, catalog, drain, post, quiz  # noqa: F401  (catalog: fixture)

from mappings.models import Credit, Mastery


def test_stored_records_load_through_their_models(client, xapi_headers, db, catalog):  # noqa: F811
    post(client, xapi_headers, [quiz("ana@school.example.edu", code, 0.9,
                                     when=f"2026-09-{i + 1:02d}T10:00:00Z")
                                for i, code in enumerate(LEAVES[:10])])
    drain(db)
    assert Mastery.objects.count() > 10 and all(m.learner for m in Mastery.objects)
    assert any(m.children for m in Mastery.objects(from_children=True))
    (credit,) = Credit.objects
    assert credit.status == "awarded" and credit.evidence_by and credit.transitions == 1
