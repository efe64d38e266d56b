"""LTI role URIs to what a person may do here.

LTI 1.3 sends full URIs (``http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor``),
sub-roles (``.../membership/Instructor#TeachingAssistant``) and, from older platforms,
short names (``Instructor``). Unknown roles are ignored; a launch with none is treated as
a learner seeing only their own record, which reveals nothing about anyone else.
Spec: https://www.imsglobal.org/spec/lti/v1p3/#role-vocabularies
"""

from __future__ import annotations

from collections.abc import Iterable

LIS = "http://purl.imsglobal.org/vocab/lis/v2/"

# (context or institution/system role name) -> our role
_BY_NAME = {
    "Learner": "learner",
    "Student": "learner",
    "Instructor": "instructor",
    "Faculty": "instructor",
    "TeachingAssistant": "instructor",
    "ContentDeveloper": "instructor",
    "Administrator": "administrator",
    "SysAdmin": "administrator",
    "Mentor": "mentor",
    "Observer": "mentor",
}
# Institution roles only grant staff rights when they are administrative ones; an
# institution "Instructor" is not necessarily an instructor of this course.
_INSTITUTION_GRANTS = {"Administrator", "SysAdmin"}


def _name_of(role: str) -> tuple[str, str]:
    """(kind, name): kind is 'context', 'institution', 'system' or 'short'."""
    if role.startswith(LIS):
        rest = role[len(LIS):]
        kind = ("institution" if rest.startswith("institution/") else
                "system" if rest.startswith("system/") else "context")
        return kind, rest.rsplit("#", 1)[-1] if "#" in rest else rest.rsplit("/", 1)[-1]
    return "short", role.strip()


def normalise(raw: Iterable[str]) -> list[str]:
    """Our roles, sorted, from the launch's roles claim."""
    out = set()
    for role in raw or ():
        if not isinstance(role, str):
            continue
        kind, name = _name_of(role)
        ours = _BY_NAME.get(name)
        if ours is None:
            continue
        if kind in ("institution", "system") and name not in _INSTITUTION_GRANTS:
            continue
        out.add(ours)
    if not out:
        out.add("learner")
    return sorted(out)
