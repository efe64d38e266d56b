"""What the competency engine stores: frameworks, rules, learners, evidence, mastery, credit.

Why these shapes: every derived record (mastery, roll-up, credit) is a pure function of the
accepted evidence, and every evidence record is a pure function of one statement, one
competency and one rule plus the teacher's decisions on it. Keys are therefore
deterministic (``statement|competency|rule``, ``learner|competency``), so a worker that
crashes, restarts or runs twice writes the same records again instead of new ones.
"""

from __future__ import annotations

import datetime as dt
import logging

import mongoengine as me

log = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Level(me.EmbeddedDocument):
    """One step of a proficiency scale."""

    name = me.StringField(required=True)
    points = me.FloatField(required=True)
    mastery = me.BooleanField(default=False)  # exactly one level of a scale is the mastery level
    description = me.StringField()


class Scale(me.EmbeddedDocument):
    """Ordered levels, lowest first."""

    name = me.StringField(required=True)
    levels = me.EmbeddedDocumentListField(Level, required=True)

    @property
    def mastery_points(self) -> float:
        return next(level.points for level in self.levels if level.mastery)

    @property
    def top_points(self) -> float:
        return max(level.points for level in self.levels)

    def level_for(self, points: float) -> Level | None:
        """The highest level whose points the score reaches (None below the lowest)."""
        reached = [level for level in self.levels if points >= level.points - 1e-9]
        return max(reached, key=lambda lv: lv.points) if reached else None


class Rollup(me.EmbeddedDocument):
    """How a parent competency's level follows from its children (Moodle-style)."""

    method = me.StringField(choices=("none", "all_children", "points", "average"),
                            default="none")
    required = me.ListField(me.StringField())  # child identifiers, for "points"
    points = me.FloatField()  # total of children's points needed, for "points"


class Framework(me.Document):
    identifier = me.StringField(primary_key=True)
    title = me.StringField(required=True)
    source = me.StringField(choices=("case", "yaml"), required=True)
    uri = me.StringField()  # CASE CFDocument URI
    case_version = me.StringField()  # "1.0" / "1.1"
    creator = me.StringField()
    description = me.StringField()
    scale = me.EmbeddedDocumentField(Scale, required=True)
    calculation = me.StringField(default="decaying_average(0.65)")
    raw = me.DictField()  # the CASE CFDocument as imported, for a faithful export
    updated_at = me.DateTimeField(default=utcnow)

    meta = {"collection": "frameworks"}


class Competency(me.Document):
    identifier = me.StringField(primary_key=True)  # CASE CFItem identifier, or a YAML id
    framework = me.StringField(required=True)
    code = me.StringField()  # humanCodingScheme
    statement = me.StringField(required=True)  # fullStatement
    type = me.StringField()  # CFItemType
    uri = me.StringField()  # CASE URI: statements carrying it map without a rule
    parent = me.StringField()  # identifier of the parent (isChildOf)
    position = me.IntField(default=0)  # order among siblings
    precedes = me.ListField(me.StringField())  # learning-path successors
    scale = me.EmbeddedDocumentField(Scale)  # overrides the framework's
    calculation = me.StringField()  # overrides the framework's
    rollup = me.EmbeddedDocumentField(Rollup, default=Rollup)
    raw = me.DictField()  # the CFItem as imported

    meta = {"collection": "competencies", "indexes": [("framework", "position"), "uri"]}


class CreditRule(me.Document):
    """A course credit: a set of competencies and the share of them that must be mastered."""

    identifier = me.StringField(primary_key=True)
    name = me.StringField(required=True)
    framework = me.StringField(required=True)
    competencies = me.ListField(me.StringField(), required=True)
    required = me.ListField(me.StringField())  # must all be mastered
    min_percent = me.FloatField(default=70.0)  # of `competencies`, mastered

    meta = {"collection": "credit_rules"}


class RuleSet(me.Document):
    """A mapping-rule YAML file as loaded (its text, for provenance and re-validation)."""

    name = me.StringField(primary_key=True)
    text = me.StringField(required=True)
    rules = me.ListField(me.DictField())  # parsed, validated rules
    loaded_at = me.DateTimeField(default=utcnow)

    meta = {"collection": "rule_sets"}


class Learner(me.Document):
    """One person, known to providers under one or more xAPI agent identifiers."""

    identifier = me.StringField(primary_key=True)
    name = me.StringField()
    agents = me.ListField(me.StringField())  # lrs.keys.ifi() strings

    meta = {"collection": "learners", "indexes": [{"fields": ["agents"], "unique": True,
                                                   "sparse": True}]}


#: How derived records are stored. Part of the catalog fingerprint ("derive"): a database
#: written by a version that stored them differently is rebuilt from its evidence by the
#: mapping worker after an upgrade.
RECORDS_FORMAT = 2


class Progress(me.Document):
    """A learner's derived records in one framework: the counted scores per competency,
    the mastery records and the credits of the framework's credit rules.

    Why one document per learner and framework, in a compact binary body: the mapping
    worker must keep up with the LRS's ingest, and on the database a write costs about the
    same whether it carries one record or sixty; writing each mastery record and credit as
    its own document made the worker four to six times slower than ingest. The body is
    written only by the mapping worker (the lease holder) and read through
    ``mappings.records``, which presents the records as documents (with the evidence behind
    each) -- nothing else parses it."""

    identifier = me.StringField(primary_key=True)  # "learner|framework"
    learner = me.StringField(required=True)
    framework = me.StringField(required=True)
    # When any record in it last changed: followers (the LMS grade sync) read by it.
    updated_at = me.DateTimeField(required=True)
    # orjson of {"leaves": {competency: [[timestamp ms, seq, points, evidence id], ...]},
    #            "mastery": {competency: {points, level, mastered, method, children?,
    #                                     ev (digest of its evidence ids), at}},
    #            "credits": {rule: {status, mastered, missing, percent, awarded_at,
    #                               revoked_at, transitions, at}}}; times in ms since 1970.
    s = me.BinaryField(required=True)

    meta = {"collection": "progress", "indexes": ["learner", "updated_at"]}


class Audit(me.Document):
    """Who did what, when: teacher decisions and credit awards/revocations."""

    at = me.DateTimeField(default=utcnow)
    actor = me.StringField(required=True)  # a person, or "mapper"
    action = me.StringField(required=True)
    subject = me.StringField(required=True)
    detail = me.DictField()

    meta = {"collection": "audit", "indexes": ["subject"]}


class WorkerState(me.Document):
    """The mapper's persisted position in the LRS sequence, and its lease."""

    identifier = me.StringField(primary_key=True)
    position = me.IntField(default=0)
    holder = me.StringField()
    lease_until = me.DateTimeField()
    updated_at = me.DateTimeField(default=utcnow)

    meta = {"collection": "worker_state"}


OBSOLETE_EVIDENCE_INDEXES = {"statement_1", "status_1_framework_1", "learner_1_competency_1",
                             "pending_review"}

# Evidence records have no model: they are stored in buckets (mappings.evidence).
MODELS = (Framework, Competency, CreditRule, RuleSet, Learner, Progress, Audit, WorkerState)


def ensure_indexes() -> None:
    """Create every index the engine's queries need. Explicitly, because the engine writes
    through pymongo in bulk and mongoengine only creates indexes on its own first use."""
    from mappings import evidence

    for model in MODELS:
        model.ensure_indexes()
    db = Progress._get_db()
    # Indexes of earlier versions (one document per evidence record): they only slowed the
    # mapping worker's inserts down.
    collection = db[evidence.COLLECTION]
    evidence.ensure_indexes(db)
    obsolete = set(collection.index_information()) & OBSOLETE_EVIDENCE_INDEXES
    if obsolete:
        # Written by such a version: move its records into buckets first (safe to
        # interrupt: the indexes go when it is done, and mark the database as moved).
        from mappings.worker import WORKER_ID

        moved, highest = evidence.migrate_flat(db)
        # The worker may have mapped statements past its position before the upgrade (a
        # batch cut short): it looks for their evidence before storing any.
        db["worker_state"].update_one({"_id": WORKER_ID},
                                      {"$max": {"checked_upto": highest}}, upsert=True)
        log.info("evidence: %d records moved into buckets", moved)
        for name in obsolete:
            collection.drop_index(name)
