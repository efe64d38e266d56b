"""Evidence that learners submit themselves (a reflection with a link or a file).

The LTI tool records a submission as an xAPI statement in the LRS, as any provider would,
under its own credential. Such a statement names the competency in a context extension, so
no rule file has to list every competency; it always waits for a teacher's review, and
only statements stored under the tool's credential are read this way (a provider cannot
route evidence to arbitrary competencies by copying the extension).
"""

from __future__ import annotations

from mappings.types import SOURCE_TYPES, CompetencyInfo, Draft

CATEGORY = "https://masteryhub.org/xapi/activities/learner-submission"
EXT_COMPETENCY = "https://masteryhub.org/xapi/extensions/competency"
EXT_LEVEL = "https://masteryhub.org/xapi/extensions/self-assessed-level"
EXT_SOURCE = "https://masteryhub.org/xapi/extensions/source-type"
RULE = "masteryhub:learner-submission"
#: Credential keys of the tool itself start with this (see lti_tool.provider).
TOOL_CREDENTIAL_PREFIX = "masteryhub-tool-"


def is_submission(stmt: dict) -> bool:
    context = stmt.get("context") or {}
    categories = (context.get("contextActivities") or {}).get("category") or ()
    return any(isinstance(c, dict) and c.get("id") == CATEGORY for c in categories)


def drafts(stmt: dict, infos: dict[str, CompetencyInfo], provider: str | None) -> list[Draft]:
    """The single review-required draft a learner submission produces (or none)."""
    if not provider or not provider.startswith(TOOL_CREDENTIAL_PREFIX) or \
            not is_submission(stmt):
        return []
    extensions = (stmt.get("context") or {}).get("extensions") or {}
    info = infos.get(str(extensions.get(EXT_COMPETENCY) or ""))
    if info is None:
        return []
    levels = sorted(info.scale.levels, key=lambda lv: lv.points)
    wanted = extensions.get(EXT_LEVEL)
    level = next((lv for lv in levels if lv.name == wanted), None) or \
        next(lv for lv in levels if lv.mastery)
    source = extensions.get(EXT_SOURCE)
    source = source if source in SOURCE_TYPES else "self_reported"
    return [Draft(info.identifier, RULE, level.points, source, True,
                  notes=[f"learner submission, self-assessed at {level.name}"])]
