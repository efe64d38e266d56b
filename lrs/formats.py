"""The ``format`` parameter of statement GETs (Part Three §2.1.3): exact, ids, canonical."""

from __future__ import annotations

from collections.abc import Callable

_LANGUAGE_MAPS = ("display", "name", "description")


def to_ids(stmt: dict) -> dict:
    """``format=ids``: agents reduced to their identifier, activities and verbs to ids."""
    return _walk(stmt, _ids_only)


def to_canonical(stmt: dict, languages: list[str]) -> dict:
    """``format=canonical``: each language map keeps only the best language for the reader."""
    return _walk(stmt, lambda kind, obj: _one_language(obj, languages))


def parse_accept_language(header: str | None) -> list[str]:
    """Language ranges in preference order (RFC 9110 §12.5.4)."""
    if not header:
        return []
    ranked = []
    for position, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.strip().lower()))
    return [tag for _, _, tag in sorted(ranked)]


def _pick(language_map: dict, languages: list[str]) -> dict:
    if not language_map:
        return language_map
    lowered = {k.lower(): k for k in language_map}
    for wanted in languages:
        if wanted == "*":
            break
        if wanted in lowered:
            key = lowered[wanted]
            return {key: language_map[key]}
        for candidate_lower, key in lowered.items():  # 'en' accepts 'en-US'
            if candidate_lower.split("-")[0] == wanted.split("-")[0]:
                return {key: language_map[key]}
    key = next(iter(language_map))
    return {key: language_map[key]}


def _one_language(obj: dict, languages: list[str]) -> dict:
    out = dict(obj)
    for name in _LANGUAGE_MAPS:
        if isinstance(out.get(name), dict):
            out[name] = _pick(out[name], languages)
    if isinstance(out.get("definition"), dict):
        out["definition"] = _one_language(out["definition"], languages)
        for component in ("choices", "scale", "source", "target", "steps"):
            if isinstance(out["definition"].get(component), list):
                out["definition"][component] = [
                    _one_language(c, languages) for c in out["definition"][component]]
    return out


_IFI = ("mbox", "mbox_sha1sum", "openid", "account")


def _ids_only(kind: str, obj: dict) -> dict:
    if kind == "verb":
        return {"id": obj["id"]}
    if kind == "activity":
        return {"objectType": "Activity", "id": obj["id"]}
    if kind == "agent":
        out = {k: obj[k] for k in ("objectType", *_IFI) if k in obj}
        if obj.get("objectType") == "Group" and not any(k in obj for k in _IFI):
            out["member"] = [_ids_only("agent", m) for m in obj.get("member", ())]
        return out
    return obj


def _walk(stmt: dict, change: Callable[[str, dict], dict]) -> dict:
    """Apply ``change`` to every verb, activity and agent of a statement."""
    out = dict(stmt)
    out["actor"] = change("agent", stmt["actor"])
    out["verb"] = change("verb", stmt["verb"])
    if isinstance(stmt.get("authority"), dict):
        out["authority"] = change("agent", stmt["authority"])
    obj = stmt["object"]
    kind = obj.get("objectType", "Activity")
    if kind == "Activity":
        out["object"] = change("activity", obj)
    elif kind in ("Agent", "Group"):
        out["object"] = change("agent", obj)
    elif kind == "SubStatement":
        out["object"] = _walk(obj, change)
    if isinstance(stmt.get("context"), dict):
        context = dict(stmt["context"])
        for key in ("instructor", "team"):
            if isinstance(context.get(key), dict):
                context[key] = change("agent", context[key])
        if isinstance(context.get("contextActivities"), dict):
            context["contextActivities"] = {
                name: ([change("activity", a) for a in value] if isinstance(value, list)
                       else [change("activity", value)])
                for name, value in context["contextActivities"].items()}
        out["context"] = context
    return out
