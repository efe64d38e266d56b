"""Learner identity: which person an xAPI agent is.

Why deterministic ids: two workers (or a worker and a recompute) that meet a new agent at
the same moment must create the *same* learner, so the id is derived from the first
identifier seen. Aliases then link further identifiers (an internship platform's email, an
online course's account) to that learner, and the evidence follows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import mongoengine as me
import pymongo.errors

from lrs.keys import ifi
from mappings.models import Learner


def learner_id_for(agent_ifi: str) -> str:
    return "L" + hashlib.sha1(agent_ifi.encode()).hexdigest()[:16]


class IdentityCache:
    """Resolves agents to learners with a per-run cache (statements repeat agents a lot)."""

    def __init__(self) -> None:
        self._by_ifi: dict[str, str] = {}
        # Learners this cache created: they can have no evidence but what this process
        # mapped since (the engine then needs no read of earlier evidence).
        self.created: set[str] = set()

    def resolve(self, agent: dict) -> str | None:
        """The learner id for an Agent (None for agents without an identifier)."""
        agent_ifi = ifi(agent)
        if agent_ifi is None:
            return None
        cached = self._by_ifi.get(agent_ifi)
        if cached is not None:
            return cached
        learner = Learner.objects(agents=agent_ifi).only("identifier").first()
        if learner is None:
            learner, created = _create(agent_ifi, agent.get("name"))
            if created:
                self.created.add(learner.identifier)
        self._by_ifi[agent_ifi] = learner.identifier
        return learner.identifier

    def prefetch(self, agent_ifis: Iterable[tuple[str, str | None]]) -> None:
        """Resolve many agents in two round trips (a batch meets hundreds of learners):
        one read of those already known, one insert of the new ones."""
        wanted = {i: name for i, name in agent_ifis if i not in self._by_ifi}
        if not wanted:
            return
        collection = Learner._get_collection()
        self._load(collection, list(wanted))
        new = [i for i in wanted if i not in self._by_ifi]
        if not new:
            return
        docs = [{"_id": learner_id_for(i), "name": wanted[i], "agents": [i]} for i in new]
        failed: set[int] = set()
        try:
            collection.insert_many(docs, ordered=False)
        except pymongo.errors.BulkWriteError as exc:  # some may exist: re-read below
            failed = {e["index"] for e in exc.details.get("writeErrors", [])}
        self.created.update(d["_id"] for k, d in enumerate(docs) if k not in failed)
        self._load(collection, new)  # another worker may have won the race: read back

    def _load(self, collection, ifis: list[str]) -> None:
        """Cache the learners owning these identifiers (chunked: long $in lists are slow)."""
        for i in range(0, len(ifis), 200):
            for doc in collection.find({"agents": {"$in": ifis[i:i + 200]}}, {"agents": 1}):
                for agent_ifi in doc["agents"]:
                    self._by_ifi[agent_ifi] = doc["_id"]

    def known_learners_of(self, actor: dict) -> list[str]:
        """Like :meth:`learners_of`, without creating learners for unknown agents (a
        statement being voided: an agent nobody knows has no evidence)."""
        agents = actor.get("member") or () if actor.get("objectType") == "Group" else [actor]
        ifis = [i for a in agents if (i := ifi(a))]
        missing = [i for i in ifis if i not in self._by_ifi]
        if missing:
            self._load(Learner._get_collection(), missing)
        return sorted({self._by_ifi[i] for i in ifis if i in self._by_ifi})

    def learners_of(self, actor: dict) -> list[str]:
        """The actor's learners: the agent itself, or each member of a Group (a team
        project is evidence for every member)."""
        if actor.get("objectType") == "Group":
            found = [self.resolve(m) for m in actor.get("member") or ()]
            return sorted({f for f in found if f})
        learner = self.resolve(actor)
        return [learner] if learner else []


def _create(agent_ifi: str, name: str | None) -> tuple[Learner, bool]:
    """The new learner, or the one another worker created first; and whether it is new."""
    identifier = learner_id_for(agent_ifi)
    try:
        return Learner(identifier=identifier, name=name, agents=[agent_ifi]).save(
            force_insert=True), True
    except me.NotUniqueError:
        # Another worker created it first (same id or same agent): use theirs.
        existing = Learner.objects(agents=agent_ifi).first()
        if existing is None:
            raise
        return existing, False


def link(learner_id: str, agent_ifi: str) -> tuple[Learner, str | None]:
    """Add an agent identifier to a learner. If the identifier already belonged to another
    learner, that learner is merged into this one; returns (learner, merged learner id)."""
    learner = Learner.objects(identifier=learner_id).first()
    if learner is None:
        raise KeyError(f"no learner {learner_id!r}")
    if agent_ifi in learner.agents:
        return learner, None
    other = Learner.objects(agents=agent_ifi).first()
    merged = None
    if other is not None:
        merged = other.identifier
        agents = list(other.agents)
        other.delete()
        for item in agents:
            if item not in learner.agents:
                learner.agents.append(item)
        if not learner.name:
            learner.name = other.name
    else:
        learner.agents.append(agent_ifi)
    learner.save()
    return learner, merged


_DECIDED = {"approve": "accepted", "override": "accepted", "reject": "rejected"}


def merge_evidence(target: dict, moved: dict) -> dict:
    """One evidence record from two copies of it: both identities of a merged learner were
    members of the same Group statement, so the statement gave each its own record for the
    same (statement, competency, rule), and both now want the same id.

    Nothing a teacher did is lost: the merged record carries both copies' decisions in time
    order (a decision found in both, as after an interrupted merge, is kept once). Its
    status follows the most recent decision, whichever copy it was made on; with no
    decision on either, it is the target's. Voided if either copy is."""
    def key(action: dict) -> tuple:
        return (action.get("action"), action.get("by"), str(action.get("at")),
                action.get("points"), action.get("comment"), action.get("credential"))

    actions: dict[tuple, dict] = {}
    for action in [*(target.get("actions") or ()), *(moved.get("actions") or ())]:
        actions.setdefault(key(action), action)
    ordered = sorted(actions.values(), key=lambda a: (a.get("at") is None, a.get("at") or 0))
    merged = dict(target, actions=ordered, voided=bool(target.get("voided") or
                                                       moved.get("voided")))
    if ordered:
        latest = _DECIDED.get(ordered[-1].get("action"))
        if latest:
            field = "superseded_status" if merged.get("status") == "superseded" else "status"
            merged[field] = latest
    return merged


def move_evidence(db, from_learner: str, to_learner: str) -> int:
    """After a merge: re-key the old learner's evidence to the new one (teacher decisions
    kept; a record the new learner already has for the same statement, competency and
    rule -- a Group statement both identities were members of -- is merged with it, see
    :func:`merge_evidence`), drop the old learner's derived records and rebuild the new
    learner's. Safe to run again after an interruption."""
    from mappings import catalog as catalog_module
    from mappings import evidence as evidence_store
    from mappings.records import PROGRESS
    from mappings.worker import ALL, apply_dirty_now, mark_dirty

    moved = evidence_store.move_learner(db, from_learner, to_learner, merge_evidence)
    db[PROGRESS].delete_many({"learner": from_learner})
    # Running workers drop their identity caches (the merged learner no longer exists).
    catalog_module.bump()
    mark_dirty(db, {(to_learner, ALL)})
    apply_dirty_now(db)
    return moved
