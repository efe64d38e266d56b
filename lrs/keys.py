"""Query keys: the strings under which a statement is found by each xAPI filter.

Why one array of prefixed keys: every statement filter of xAPI 1.0.3 Part Three §2.1.3
(`agent`, `verb`, `activity`, `registration`, and their `related_*` widenings) is an
equality on some value inside the statement. Flattening them into ``k`` lets one compound
multikey index ``(k, _id)`` serve all of them within a bounded sequence window, instead of
one index per filter (each index costs ingest speed).
"""

from __future__ import annotations

AGENT = "a:"  # actor or object agent/group, and members of those groups
RELATED_AGENT = "A:"  # authority, instructor, team, and agents inside a SubStatement
VERB = "v:"
ACTIVITY = "o:"  # the object activity
RELATED_ACTIVITY = "O:"  # context activities, and activities inside a SubStatement
REGISTRATION = "r:"
MINE = "m:"  # the credential key that stored it (statements/read/mine)
VOIDS = "x:"  # a voiding statement's target id
ALL = "*"  # on every statement: sequence ranges are read through the (k, _id) index, because
# SecantusDB answers a range on _id alone with a collection scan

VOIDED_VERB = "http://adlnet.gov/expapi/verbs/voided"


def ifi(agent: dict) -> str | None:
    """The inverse functional identifier of an Agent or identified Group as one string."""
    if "mbox" in agent:
        return "mbox|" + agent["mbox"]
    if "mbox_sha1sum" in agent:
        return "sha1|" + agent["mbox_sha1sum"].lower()
    if "openid" in agent:
        return "openid|" + agent["openid"]
    account = agent.get("account")
    if isinstance(account, dict):
        return f"acct|{account.get('homePage')}|{account.get('name')}"
    return None


def agent_keys(agent: dict, prefix: str, out: set[str]) -> None:
    """The agent itself and, for a Group, its members (Part Three §2.1.3 'agent')."""
    ident = ifi(agent)
    if ident:
        out.add(prefix + ident)
    if agent.get("objectType") == "Group":
        for member in agent.get("member") or ():
            member_ifi = ifi(member)
            if member_ifi:
                out.add(prefix + member_ifi)


def _context_keys(context: dict, out: set[str]) -> None:
    for key in ("instructor", "team"):
        if isinstance(context.get(key), dict):
            agent_keys(context[key], RELATED_AGENT, out)
    activities = context.get("contextActivities") or {}
    for value in activities.values():
        for activity in value if isinstance(value, list) else (value,):
            out.add(RELATED_ACTIVITY + activity["id"])


def statement_keys(stmt: dict, credential_key: str | None) -> set[str]:
    """All keys of a validated statement (the LRS-set authority included)."""
    out: set[str] = {ALL, VERB + stmt["verb"]["id"]}
    agent_keys(stmt["actor"], AGENT, out)
    obj = stmt["object"]
    kind = obj.get("objectType", "Activity")
    if kind == "Activity":
        out.add(ACTIVITY + obj["id"])
    elif kind in ("Agent", "Group"):
        agent_keys(obj, AGENT, out)
    elif kind == "SubStatement":
        agent_keys(obj["actor"], RELATED_AGENT, out)
        inner = obj["object"]
        inner_kind = inner.get("objectType", "Activity")
        if inner_kind == "Activity":
            out.add(RELATED_ACTIVITY + inner["id"])
        elif inner_kind in ("Agent", "Group"):
            agent_keys(inner, RELATED_AGENT, out)
        if isinstance(obj.get("context"), dict):
            _context_keys(obj["context"], out)
    elif kind == "StatementRef" and stmt["verb"]["id"] == VOIDED_VERB:
        out.add(VOIDS + obj["id"])
    context = stmt.get("context")
    if isinstance(context, dict):
        _context_keys(context, out)
        if context.get("registration"):
            out.add(REGISTRATION + context["registration"].lower())
    if isinstance(stmt.get("authority"), dict):
        agent_keys(stmt["authority"], RELATED_AGENT, out)
    if credential_key:
        out.add(MINE + credential_key)
    return out


def inherited_keys(target_keys: list[str]) -> set[str]:
    """Keys a statement gains from the statement it references (Part Three §2.1.3,
    'Filter Conditions for StatementRefs': a filter matching the target also returns the
    statements that target it). Voiding and ownership keys are not inherited."""
    return {k for k in target_keys if not k.startswith((VOIDS, MINE))}
