"""The teacher's side of a launch: the class at a glance, who needs support, the review
queue, and CSV exports (the class for staff, a learner's own record for them and their
mentors).

Every view runs inside a launch session (token in the path). Class, review and the class
export are for staff (instructors, administrators) of the launch's course only: the
learners are the course's members (``access.course_learners``), the competencies the
course's scope (``courses.scope_of``). Nothing crosses courses.

The class view reads with a handful of queries whatever the class size (competencies,
mastery, evidence, credits), never one per cell; ``Server-Timing: app;dur=, cpu;dur=`` on
every response of this blueprint gives its server time and its own CPU time (the class-view
benchmark reads them).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from markupsafe import Markup, escape
from mongoengine.connection import get_db

from lrs.jsonio import loads_json
from lti_tool import access, sync
from lti_tool.courses import Scope, scope_of
from lti_tool.models import Course, LaunchSession, Membership
from lti_tool.web import error_page, launched, server_timing
from mappings import calculation, progress, self_report
from mappings import evidence as evidence_store
from mappings import records as derived
from mappings import review as decisions
from mappings.models import CreditRule, Learner, utcnow

bp = Blueprint("teacher", __name__, url_prefix="/lti/s/<token>", template_folder="templates")

# "Needs support" defaults; each can be changed on the page (query parameters).
DEFAULT_DAYS = 14  # no accepted evidence for this many days
DEFAULT_STUCK = 3  # this many accepted pieces of evidence on a competency, still below mastery
PALETTE_STEPS = 10  # CSS classes hm-1 .. hm-10 (hm-0: no evidence)
REVIEW_LIMIT = 100  # pending items shown at once (oldest first)
MAX_COMMENT = 2000


class BadInput(ValueError):
    """A request the page cannot serve; the message is shown with a 400."""


# -- blueprint plumbing --------------------------------------------------------------------
# (Referrer-Policy and no-store come from lti_tool.web for every page inside a launch.)
server_timing(bp, cpu=True)


@bp.errorhandler(403)
def _forbidden(_):
    return error_page("You may not see this page: it needs a teacher's role in this course, "
                      "or it belongs to another learner.", 403)


@bp.errorhandler(404)
def _not_found(_):
    return error_page("There is no such record in this course.", 404)


@bp.errorhandler(BadInput)
def _bad_input(exc: BadInput):
    return error_page(str(exc), 400)


def _staff_only(session: LaunchSession) -> None:
    if not session.is_staff or not session.context:
        abort(403)


def _course(session: LaunchSession) -> Course | None:
    return Course.objects(identifier=session.context).first() if session.context else None


def _members(session: LaunchSession) -> list[Membership]:
    """The course's learners, one membership per learner record, by name."""
    out, seen = [], set()
    for m in access.course_learners(session.context):
        if m.learner not in seen:
            seen.add(m.learner)
            out.append(m)
    return out


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _int_arg(name: str, default: int, low: int, high: int, what: str) -> int:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{what} must be a whole number (got {raw[:40]!r}).") from None
    if not low <= value <= high:
        raise BadInput(f"{what} must be between {low} and {high}.")
    return value


# -- the class: one read of everything the view, the support list and the export need ------
@dataclass
class Cell:
    competency: str
    points: float | None = None
    level: str | None = None
    index: int | None = None  # 1-based on the competency's scale
    of: int = 0  # levels on the scale
    mastered: bool = False
    evidence: int = 0  # accepted, not voided
    last: dt.datetime | None = None

    @property
    def step(self) -> int:
        """Palette step 1..10 (0: no evidence): the level's position on its scale."""
        if not self.index or not self.of:
            return 0
        return max(1, min(PALETTE_STEPS, math.ceil(self.index * PALETTE_STEPS / self.of)))


@dataclass
class LearnerLine:
    learner: str
    name: str
    email: str | None
    cells: dict[str, Cell]
    credits: list[progress.CreditRow]
    last: dt.datetime | None  # newest accepted evidence in the course's competencies
    pending: int = 0
    reasons: list[dict] = field(default_factory=list)  # why they need support

    def proficient(self, leaves: list[str]) -> int:
        return sum(1 for c in leaves if self.cells[c].mastered)


@dataclass
class ClassData:
    course: Course | None
    scope: Scope
    rows: list[progress.CompetencyRow]  # every competency of the course, in order
    lines: list[LearnerLine]
    rules: dict[str, CreditRule]


def load_class(db, session: LaunchSession, *, cell_dates: bool = False) -> ClassData:
    """Everything about the course's learners in a few queries whose size is bounded by the
    class (learners x competencies), never by the whole evidence collection: memberships,
    the course's competencies, one read of the learners' mastery and credit records (which
    also give the dates of their newest evidence) and the pending evidence (by the evidence
    buckets' pending index). ``cell_dates``: also each cell's newest evidence date (the CSV
    export)."""
    course = _course(session)
    scope = scope_of(course)
    members = _members(session)
    ids = [m.learner for m in members]
    rows, _ = progress.competency_rows(scope.competencies)
    by_id = {r.identifier: r for r in rows}
    rules = {r.identifier: r for r in CreditRule.objects(identifier__in=scope.credit_rules)}
    wanted = list(dict.fromkeys(list(by_id) + sorted(
        {c for r in rules.values() for c in r.competencies})))
    wanted_set = set(wanted)
    # One read of the class's records (progress documents by learner; mappings.records).
    # A leaf's mastery record lists the accepted, non-voided evidence behind it, oldest
    # first: its length is the evidence count and its last id the newest evidence.
    by_learner = derived.load(db, ids) if ids and (scope.frameworks or rules) else {}
    frameworks = set(scope.frameworks)
    records: dict[tuple[str, str], dict] = {
        (learner, cid): m for learner, found in by_learner.items()
        for cid, m in found.mastery.items()
        if cid in wanted_set and m["framework"] in frameworks}
    pending: dict[str, int] = defaultdict(int)
    if ids and by_id:
        # By the buckets' pending index (the frameworks a bucket has pending records in):
        # pending evidence is few. Asking for the class's learners instead reads every
        # piece of their evidence (learner index), which measured slower by far (class
        # view p95 157 ms -> 337 ms, when evidence was one document per record).
        learners = set(ids)
        for e in evidence_store.pending(db, scope.frameworks):
            if e["learner"] in learners and e["competency"] in by_id and not e.get("voided"):
                pending[e["learner"]] += 1
    stored_credits = {(learner, rid): c for learner, found in by_learner.items()
                      for rid, c in found.credits.items() if rid in rules}
    level_index = {r.identifier: {lv.name: i for i, lv in enumerate(r.levels, start=1)}
                   for r in rows}
    lines = []
    for m in members:
        cells = {}
        for cid in wanted:
            row = by_id.get(cid)
            record = records.get((m.learner, cid)) or {}
            leaf = not record.get("from_children")
            cell = Cell(cid, record.get("points"), record.get("level"),
                        mastered=bool(record.get("mastered")),
                        evidence=len(record.get("evidence") or ()) if leaf else 0)
            if row is not None:
                cell.of = len(row.levels)
                cell.index = level_index[cid].get(cell.level)
            cells[cid] = cell
        mastered = {cid for cid, cell in cells.items() if cell.mastered}
        credit_list = []
        for rid in scope.credit_rules:
            rule = rules.get(rid)
            if rule is None:
                continue
            doc = stored_credits.get((m.learner, rid)) or {}
            done = calculation.evaluate_credit(list(rule.competencies), mastered,
                                               required=list(rule.required or ()),
                                               min_percent=rule.min_percent)
            credit_list.append(progress.CreditRow(
                rid, rule.name, len(rule.competencies), len(done.mastered), rule.min_percent,
                done.percent, doc.get("status", "in_progress"), doc.get("awarded_at"),
                list(done.missing_required)))
        lines.append(LearnerLine(m.learner, m.name or m.email or m.user, m.email, cells,
                                 credit_list, None, pending[m.learner]))
    _newest_evidence(lines, records, cell_dates=cell_dates)
    return ClassData(course, scope, rows, lines, rules)


def _newest_evidence(lines: list[LearnerLine], records: dict[tuple[str, str], dict], *,
                     cell_dates: bool) -> None:
    """Set each learner's newest accepted evidence time (and, with ``cell_dates``, each
    cell's): each leaf's mastery record knows the time of the newest evidence it counts
    (``evidence_at``, mappings.records), so no evidence is read."""
    by_line = {line.learner: line for line in lines}
    for (learner, cid), m in records.items():
        when = _aware(m.get("evidence_at"))
        if m.get("from_children") or when is None or learner not in by_line:
            continue
        line = by_line[learner]
        if cell_dates:
            line.cells[cid].last = when
        if line.last is None or when > line.last:
            line.last = when


# -- who needs support -----------------------------------------------------------------------
SUPPORT_RULES = {
    "inactive": "No accepted evidence in the last {days} days (or none at all).",
    "stuck": "{stuck} or more accepted pieces of evidence on one competency and still below "
             "proficient.",
    "credit": "Credit at risk: a credit not yet awarded for which the proficient competencies "
              "plus every competency not yet attempted (no accepted evidence) are fewer than "
              "the credit needs. Even proficiency in everything untouched would not earn it: "
              "some competencies already attempted below proficient must rise.",
}


def needs_support(data: ClassData, *, days: int, stuck: int,
                  now: dt.datetime | None = None) -> list[LearnerLine]:
    """The learners who need support now, each with its reasons in words."""
    now = now or utcnow()
    rows = {r.identifier: r for r in data.rows}
    leaves = [r.identifier for r in data.rows if r.is_leaf]
    out = []
    for line in data.lines:
        reasons = []
        if line.last is None:
            reasons.append({"kind": "inactive", "text": "No accepted evidence yet."})
        elif line.last < now - dt.timedelta(days=days):
            idle = (now - line.last).days
            reasons.append({"kind": "inactive",
                            "text": f"No accepted evidence for {idle} days "
                                    f"(last on {line.last:%d %b %Y})."})
        for cid in leaves:
            cell = line.cells[cid]
            if cell.evidence >= stuck and not cell.mastered:
                row = rows[cid]
                reasons.append({
                    "kind": "stuck", "competency": cid,
                    "text": f"Stuck on {row.code or row.statement}: {cell.evidence} pieces of "
                            f"accepted evidence, still {cell.level or 'below any level'} "
                            f"(proficient is "
                            f"{next((lv.name for lv in row.levels if lv.mastery), 'mastery')})."})
        for credit in line.credits:
            rule = data.rules.get(credit.identifier)
            if rule is None or credit.status == "awarded":
                continue
            needed = credit.needed_count
            untouched = sum(1 for c in rule.competencies
                            if line.cells.get(c) is None or line.cells[c].points is None)
            if credit.mastered + untouched < needed:
                short = needed - credit.mastered - untouched
                reasons.append({
                    "kind": "credit",
                    "text": f"{credit.name} at risk: {credit.mastered} of {credit.total} "
                            f"proficient and {needed} needed, but only {untouched} not yet "
                            f"attempted — at least {short} already attempted below proficient "
                            f"must rise."})
        if reasons:
            line.reasons = reasons
            out.append(line)
    return out


# -- the class view --------------------------------------------------------------------------
SORTS = {"name": "Name", "proficient": "Proficient", "credit": "Credit"}


def _sorted(lines: list[LearnerLine], sort: str, descending: bool, leaves: list[str],
            credit_rule: str | None) -> list[LearnerLine]:
    def name_key(line):
        return (line.name.lower(), line.learner)

    lines = sorted(lines, key=name_key)
    if sort == "name":
        return lines[::-1] if descending else lines
    if sort == "proficient":
        def key(line):
            return line.proficient(leaves)
    elif sort == "credit":
        def key(line):
            row = next((c for c in line.credits if c.identifier == credit_rule), None)
            return row.percent if row else -1.0
    else:  # one competency: its points, learners without evidence last
        cid = sort[2:]

        def key(line):
            points = line.cells[cid].points
            return -math.inf if points is None else points
    # stable: ties stay in name order either way
    return sorted(lines, key=key, reverse=descending) if descending else \
        sorted(lines, key=key)


def _descendants(rows: list[progress.CompetencyRow], strand: str) -> set[str]:
    out = {strand}
    changed = True
    while changed:
        changed = False
        for r in rows:
            if r.parent in out and r.identifier not in out:
                out.add(r.identifier)
                changed = True
    return out


def heatmap_cells(line: LearnerLine, rows: list[progress.CompetencyRow], home: str,
                  cell_path: dict[str, str]) -> Markup:
    """A learner's cells of the heatmap. Written here rather than in the template: 1,200
    cells of a 30 x 40 class took most of the page's time as Jinja expressions.

    Each cell: the palette class of its level, the level's number (a tick when proficient,
    a dash without evidence), and a label naming learner, competency and level, linking to
    the learner's history of that competency."""
    name = escape(line.name)
    out = []
    for r in rows:
        cell = line.cells[r.identifier]
        what = escape(r.code or r.statement)
        if cell.index:
            mark = "✓" if cell.mastered else ""
            out.append(
                f'<td class="cell"><a class="hm hm-{cell.step}{" mastered" if mark else ""}" '
                f'href="{home}{cell_path[r.identifier]}" aria-label="{name}, {what}: '
                f'{escape(cell.level)}{", proficient" if mark else ""}">{cell.index}{mark}</a>'
                "</td>")
        else:
            out.append(f'<td class="cell"><a class="hm hm-0" href="{home}'
                       f'{cell_path[r.identifier]}" aria-label="{name}, {what}: no evidence '
                       'yet">&ndash;</a></td>')
    return Markup("".join(out))


@bp.get("/class/")
@launched
def class_view(session: LaunchSession):
    """The class at a glance: learners by competencies, who needs support, exports."""
    _staff_only(session)
    db = get_db()
    data = load_class(db, session)
    rows = data.rows
    strands = [r for r in rows if not r.is_leaf]
    args = request.args
    strand = args.get("strand") or ""
    if strand and strand not in {r.identifier for r in strands}:
        raise BadInput("Filter by a strand of this course (a competency with sub-competencies).")
    query = (args.get("q") or "").strip()[:100]
    placed = args.get("competency") if args.get("competency") in {r.identifier
                                                                    for r in rows} else None
    sort = args.get("sort") or (f"c:{placed}" if placed else "name")
    if sort not in SORTS and not (sort.startswith("c:") and sort[2:] in {r.identifier
                                                                          for r in rows}):
        raise BadInput("Sort by name, proficient, credit, or a competency of this course.")
    direction = args.get("dir") or ("asc" if sort == "name" else "desc")
    if direction not in ("asc", "desc"):
        raise BadInput("The sort direction is asc or desc.")
    days = _int_arg("days", DEFAULT_DAYS, 1, 365, "Days without evidence")
    stuck = _int_arg("stuck", DEFAULT_STUCK, 1, 100, "Evidence count for 'stuck'")
    credit_rule = args.get("rule") or next(
        (r for r in data.scope.credit_rules if r in data.rules), None)
    if credit_rule and credit_rule not in data.rules:
        raise BadInput("Sort by a credit of this course.")

    support = needs_support(data, days=days, stuck=stuck)
    shown = [r for r in rows if r.identifier in _descendants(rows, strand)] if strand else rows
    leaves = [r.identifier for r in shown if r.is_leaf]
    lines = data.lines
    if query:
        needle = query.lower()
        lines = [line for line in lines if needle in line.name.lower()
                 or needle in (line.email or "").lower()]
    lines = _sorted(lines, sort, direction == "desc", leaves, credit_rule)

    base = {k: v for k, v in (("strand", strand), ("q", query),
                              ("days", args.get("days")), ("stuck", args.get("stuck")),
                              ("rule", args.get("rule"))) if v}

    def sort_url(key: str) -> str:
        default = "asc" if key == "name" else "desc"
        flip = {"asc": "desc", "desc": "asc"}[direction] if key == sort else default
        return url_for("teacher.class_view", token=session.token, sort=key, dir=flip,
                       **base) + "#heatmap"

    # Links to a learner's pages, built once (url_for per cell would be most of the time).
    dashboard = {line.learner: url_for("pages.dashboard", token=session.token,
                                       learner=line.learner) for line in data.lines}
    cell_path = {r.identifier: "competency/" + quote(r.identifier, safe="") for r in rows}
    legends = []
    for r in shown or rows:
        names = [lv.name for lv in r.levels]
        if all(names != [lv.name for lv in legend] for legend in legends):
            legends.append(r.levels)
    credit_names = {rid: rule.name for rid, rule in data.rules.items()}
    cells = {line.learner: heatmap_cells(line, shown, dashboard[line.learner], cell_path)
             for line in lines}
    return render_template(
        "lti/teacher_class.html", session=session, course=data.course, rows=shown,
        all_rows=rows, strands=strands, strand=strand, query=query, lines=lines,
        total=len(data.lines), leaves=leaves, sort=sort, direction=direction,
        sort_url=sort_url, dashboard=dashboard, cell_path=cell_path, legends=legends,
        cells=cells,
        support=support, days=days, stuck=stuck, rules=SUPPORT_RULES,
        credit_rule=credit_rule, credit_names=credit_names, placed=placed,
        pending=sum(line.pending for line in data.lines), steps=PALETTE_STEPS,
        gradebook=sync.sync_status(session.context, db) if session.context else None,
        step_of=lambda index, of: Cell("", index=index, of=of).step)


# -- the review queue ------------------------------------------------------------------------
def _text(value) -> str | None:
    """A language map's text (en first), or None."""
    if isinstance(value, dict) and value:
        for key in ("en-US", "en", "en-GB"):
            if value.get(key):
                return str(value[key])
        return str(next(iter(value.values())))
    return None


def _web_link(url) -> str | None:
    return url if isinstance(url, str) and urlsplit(url).scheme in ("http", "https") else None


def _statement_view(stmt: dict | None) -> dict:
    """What a teacher needs from the xAPI statement behind a piece of evidence."""
    if not stmt:
        return {}
    obj = stmt.get("object") or {}
    definition = obj.get("definition") or {}
    result = stmt.get("result") or {}
    score = result.get("score") or {}
    parts = []
    if "scaled" in score:
        parts.append(f"score {round(float(score['scaled']) * 100)}%")
    elif "raw" in score:
        parts.append(f"score {score['raw']}" + (f" of {score['max']}" if "max" in score
                                                 else ""))
    if "success" in result:
        parts.append("passed" if result["success"] else "not passed")
    if result.get("completion") is not None:
        parts.append("completed" if result["completion"] else "not completed")
    if result.get("response"):
        parts.append(f"response: {str(result['response'])[:500]}")
    extensions = (stmt.get("context") or {}).get("extensions") or {}
    attachments = []
    for a in stmt.get("attachments") or ():
        link = _web_link(a.get("fileUrl"))
        attachments.append({"name": _text(a.get("display")) or "attachment",
                            "type": a.get("contentType"), "url": link})
    actor = stmt.get("actor") or {}
    return {
        "verb": _text((stmt.get("verb") or {}).get("display")) or
        str((stmt.get("verb") or {}).get("id", "")).rsplit("/", 1)[-1],
        "object_id": obj.get("id"), "name": _text(definition.get("name")),
        "description": _text(definition.get("description")),
        "more_info": _web_link(definition.get("moreInfo")),
        "result": ", ".join(parts), "actor": actor.get("name"),
        "self_level": extensions.get(self_report.EXT_LEVEL),
        "submission": self_report.is_submission(stmt), "attachments": attachments,
        "timestamp": stmt.get("timestamp"), "platform": (stmt.get("context") or {}).get(
            "platform"),
    }


def _pending(db, session: LaunchSession, scope: Scope, learners: list[str]
             ) -> tuple[list[dict], int]:
    """The course's pending, non-voided evidence of these learners, oldest first (at most
    REVIEW_LIMIT) with the statements and files behind it, and how many there are in all.
    Found by the evidence buckets' pending index, as the class view counts them."""
    if not learners or not scope.competencies:
        return [], 0
    wanted_learners, wanted_competencies = set(learners), set(scope.competencies)
    items = [{k: v for k, v in e.items() if k != "actions"}
             for e in evidence_store.pending(db, scope.frameworks)
             if e["learner"] in wanted_learners and e["competency"] in wanted_competencies
             and not e.get("voided")]
    total = len(items)
    items.sort(key=lambda e: (_aware(e["timestamp"]), e["_id"]))
    items = items[:REVIEW_LIMIT]
    sids = sorted({e["statement"] for e in items})
    statements = {d["sid"]: loads_json(d["j"]) for d in db["lrs_statements"].find(
        {"sid": {"$in": sids}}, {"sid": 1, "j": 1})} if sids else {}
    files: dict[str, list[dict]] = defaultdict(list)
    for f in db["lti_files"].find({"statement": {"$in": sids}},
                                  {"name": 1, "statement": 1, "size": 1, "content_type": 1}):
        files[f["statement"]].append(f)
    for e in items:
        e["view"] = _statement_view(statements.get(e["statement"]))
        e["files"] = files.get(e["statement"], [])
        if e["files"]:  # served here, behind the access checks; not the statement's fileUrl
            e["view"]["attachments"] = [a for a in e["view"].get("attachments", [])
                                        if a["name"] not in {f["name"] for f in e["files"]}]
    return items, total


@bp.get("/review")
@launched
def review(session: LaunchSession):
    """Evidence waiting for a teacher: the statement's details and the decision form."""
    _staff_only(session)
    db = get_db()
    members = _members(session)
    scope = scope_of(_course(session))
    rows, _ = progress.competency_rows(scope.competencies)
    items, total = _pending(db, session, scope, [m.learner for m in members])
    decided = None
    if request.args.get("decided"):
        evidence = evidence_store.get(db, request.args["decided"])
        if evidence is not None and evidence["learner"] in {m.learner for m in members} \
                and evidence.get("actions"):
            mastery = derived.mastery_one(db, evidence["learner"],
                                          evidence["competency"]) or {}
            decided = {"evidence": evidence, "action": evidence["actions"][-1],
                       "mastery": mastery}
    return render_template(
        "lti/teacher_review.html", session=session, course=_course(session), items=items,
        total=total, limit=REVIEW_LIMIT, rows={r.identifier: r for r in rows},
        people={m.learner: m for m in members}, decided=decided)


@bp.post("/review")
@launched
def decide(session: LaunchSession):
    """Approve, reject or override one piece of evidence of this course's learners."""
    _staff_only(session)
    form = request.form
    evidence_id = form.get("evidence") or ""
    action = form.get("action") or ""
    comment = (form.get("comment") or "").strip() or None
    db = get_db()
    evidence = evidence_store.get(db, evidence_id) if evidence_id else None
    learners = {m.learner for m in _members(session)}
    scope = scope_of(_course(session))
    if evidence is None or evidence["learner"] not in learners or \
            evidence["competency"] not in scope.competencies:
        abort(404)
    if action not in decisions.ACTIONS:
        raise BadInput("Choose Approve, Reject or Override level.")
    if comment and len(comment) > MAX_COMMENT:
        raise BadInput(f"The comment is longer than {MAX_COMMENT} characters.")
    if action in ("reject", "override") and not comment:
        raise BadInput("Say why in a comment: the learner sees it with the decision.")
    points = None
    if action == "override":
        (row,), _ = progress.competency_rows([evidence["competency"]])
        level = form.get("level") or ""
        chosen = next((lv for lv in row.levels if lv.name == level), None)
        if chosen is None:
            raise BadInput("Choose the level from the competency's scale to override with.")
        points = chosen.points
    elif form.get("level"):
        raise BadInput("A level is only chosen with Override level; leave it empty to approve "
                       "or reject.")
    try:
        decisions.decide(db, evidence_id, action, by=session.name or session.user,
                      comment=comment, points=points, credential=f"lti:{session.user}")
    except decisions.ReviewError as exc:
        raise BadInput(f"The decision was not recorded: {exc}") from None
    return redirect(url_for("teacher.review", token=session.token,
                            decided=evidence_id) + "#decided", code=303)


# -- CSV exports -----------------------------------------------------------------------------
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """A cell as text; text that a spreadsheet would run as a formula starts with a quote."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        return _aware(value).strftime("%Y-%m-%d")
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_response(header: list[str], rows: list[list], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([safe_cell(v) for v in row] for row in rows)
    # UTF-8 with a byte-order mark: Excel then reads names with accents correctly.
    response = Response(out.getvalue().encode("utf-8-sig"),
                        content_type="text/csv; charset=utf-8")
    ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "-", filename).strip("-") or "export.csv"
    response.headers["Content-Disposition"] = \
        f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


COMPETENCY_HEADER = ["Learner", "Email", "Learner id", "Competency code", "Competency",
                     "Level", "Level number", "Levels on scale", "Points", "Proficient",
                     "Evidence count", "Last evidence"]
CREDIT_HEADER = ["Learner", "Email", "Learner id", "Credit", "Status", "Proficient",
                 "Competencies", "Percent", "Needed percent", "Needed count", "Awarded",
                 "Still required"]


def _competency_rows(line: LearnerLine, rows: list[progress.CompetencyRow]) -> list[list]:
    out = []
    for r in rows:
        cell = line.cells[r.identifier]
        out.append([line.name, line.email, line.learner, r.code, r.statement, cell.level,
                    cell.index, len(r.levels), cell.points, cell.mastered, cell.evidence,
                    cell.last])
    return out


def _credit_rows(line: LearnerLine) -> list[list]:
    return [[line.name, line.email, line.learner, c.name, c.status.replace("_", " "),
             c.mastered, c.total, round(c.percent, 2), c.needed_percent, c.needed_count,
             c.awarded_at, ", ".join(c.required_missing)] for c in line.credits]


def _file_stem(course: Course | None) -> str:
    name = (course.label or course.title or course.context_id) if course else "class"
    return f"{name}-{utcnow():%Y-%m-%d}"


@bp.get("/export/class.csv")
@launched
def export_class(session: LaunchSession):
    """The class's mastery: one row per learner and competency of the course. Credit
    progress is a second file (export/class-credits.csv), one row per learner and credit."""
    _staff_only(session)
    data = load_class(get_db(), session, cell_dates=True)
    rows = [row for line in data.lines for row in _competency_rows(line, data.rows)]
    return csv_response(COMPETENCY_HEADER, rows, f"{_file_stem(data.course)}-mastery.csv")


@bp.get("/export/class-credits.csv")
@launched
def export_class_credits(session: LaunchSession):
    _staff_only(session)
    data = load_class(get_db(), session)
    rows = [row for line in data.lines for row in _credit_rows(line)]
    return csv_response(CREDIT_HEADER, rows, f"{_file_stem(data.course)}-credits.csv")


def _one_learner(session: LaunchSession) -> ClassData:
    """The record of one learner: a learner's own; ``?learner=`` for a mentor's mentee
    (a mentor of one learner may leave it out) or, for staff, a learner of the course."""
    learner = request.args.get("learner")
    if not learner and "learner" in session.roles:
        learner = session.learner
    elif not learner and "mentor" in session.roles and len(session.mentees or ()) == 1:
        learner = session.mentees[0]
    if not learner:
        raise BadInput("Say whose record to export (?learner=).")
    if not access.can_view_learner(session, learner):
        abort(403)
    person = Learner.objects(identifier=learner).first()
    if person is None:
        abort(404)
    member = Membership.objects(course=session.context, learner=learner).first() \
        if session.context else None
    course = _course(session)
    scope = scope_of(course)
    db = get_db()
    view = progress.learner_progress(db, learner, scope.competencies, scope.credit_rules)
    cells = {r.identifier: Cell(r.identifier, r.points, r.level, r.level_index,
                                len(r.levels), r.mastered, r.evidence_count,
                                _aware(r.last_evidence)) for r in view.competencies}
    email = (member.email if member else None) or \
        (session.email if learner == session.learner else None)
    line = LearnerLine(learner, (member.name if member else None) or person.name or learner,
                       email, cells, view.credits, None)
    return ClassData(course, scope, view.competencies, [line], {})


@bp.get("/export/me.csv")
@launched
def export_me(session: LaunchSession):
    """A learner's own record (mentors: their mentee's, with ?learner=), one row per
    competency of the course; credits in export/me-credits.csv."""
    data = _one_learner(session)
    (line,) = data.lines
    return csv_response(COMPETENCY_HEADER, _competency_rows(line, data.rows),
                        f"{line.name}-{utcnow():%Y-%m-%d}-mastery.csv")


@bp.get("/export/me-credits.csv")
@launched
def export_me_credits(session: LaunchSession):
    data = _one_learner(session)
    (line,) = data.lines
    return csv_response(CREDIT_HEADER, _credit_rows(line),
                        f"{line.name}-{utcnow():%Y-%m-%d}-credits.csv")
