"""Deep Linking 2.0: an instructor places a view of Mastery Hub into the course.

On an ``LtiDeepLinkingRequest`` launch, staff get a picker listing the course's views (the
learner dashboard, each competency of the course, each credit); the choice goes back to
the platform as a signed ``LtiDeepLinkingResponse`` (pylti1p3's ``DeepLink``, signed with
the tool's active key and naming its kid) of ``ltiResourceLink`` items whose custom
parameters say which view they open. A later resource-link launch carrying those custom
parameters lands on that view.

Spec: https://www.imsglobal.org/spec/lti-dl/v2p0
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, current_app, render_template, request, url_for
from pylti1p3.deep_link import DeepLink
from pylti1p3.deep_link_resource import DeepLinkResource

from lti_tool.courses import scope_of
from lti_tool.launch import CLAIM, DL_CLAIM, claims_of
from lti_tool.models import Course, LaunchSession, Platform
from lti_tool.registry import registration_of
from lti_tool.web import base_url, error_page, launch_url, launched
from mappings.models import Competency, CreditRule

DEEP_LINKING_REQUEST = "LtiDeepLinkingRequest"
RESOURCE_LINK_REQUEST = "LtiResourceLinkRequest"
DATA_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/data"
VIEWS = ("dashboard", "competency", "credit")

bp = Blueprint("lti_deep_linking", __name__, url_prefix="/lti", template_folder="templates")


@dataclass(frozen=True)
class Choice:
    """One view an instructor can place: ``value`` is what the picker's form submits."""

    value: str  # "dashboard", "competency:<id>", "credit:<id>"
    title: str  # the link's title in the course
    label: str  # what the picker shows
    detail: str = ""
    custom: tuple[tuple[str, str], ...] = ()


def choices_for(course: Course | None) -> list[Choice]:
    """The views of the course: the dashboard, its competencies, its credits."""
    scope = scope_of(course)
    out = [Choice("dashboard", "Mastery Hub: learner dashboard", "Learner dashboard",
                  "Each learner sees their own progress; teachers see the class.",
                  (("masteryhub_view", "dashboard"),))]
    found = {c.identifier: c for c in Competency.objects(identifier__in=scope.competencies)}
    for cid in scope.competencies:
        comp = found.get(cid)
        if comp is None:
            continue
        code = comp.code or comp.identifier
        out.append(Choice(f"competency:{cid}", f"Mastery Hub: {code}", code, comp.statement,
                          (("masteryhub_view", "competency"),
                           ("masteryhub_competency", cid))))
    rules = {r.identifier: r for r in CreditRule.objects(identifier__in=scope.credit_rules)}
    for rid in scope.credit_rules:
        rule = rules.get(rid)
        if rule is None:
            continue
        out.append(Choice(f"credit:{rid}", f"Mastery Hub: {rule.name}", rule.name,
                          f"Course credit: {rule.min_percent:g} % of its competencies "
                          "mastered.",
                          (("masteryhub_view", "credit"), ("masteryhub_credit", rid))))
    return out


GROUPS = (("dashboard", "Overview"), ("competency", "Competencies"),
          ("credit", "Course credits"))


def grouped(choices: list[Choice]) -> list[tuple[str, list[Choice]]]:
    """The choices under their headings, for the picker's fieldsets."""
    out = []
    for kind, legend in GROUPS:
        items = [c for c in choices if c.value.split(":", 1)[0] == kind]
        if items:
            out.append((legend, items))
    return out


def _flag(value) -> bool:
    return value is True or str(value).lower() == "true"


def settings_of(session: LaunchSession) -> dict:
    return dict(claims_of(session).get(DL_CLAIM) or {})


def _course(session: LaunchSession) -> Course | None:
    return Course.objects(identifier=session.context).first() if session.context else None


def _refusal(session: LaunchSession) -> tuple[str, int] | None:
    """Why this session may not place views, as an error page; None if it may."""
    if session.message_type != DEEP_LINKING_REQUEST:
        return error_page("This page is only for placing Mastery Hub in a course (a deep "
                          "linking launch). Use your course's “add content” for that.", 400)
    if not session.is_staff:
        return error_page("Only teachers and administrators can place Mastery Hub views "
                          "in a course.", 403)
    settings = settings_of(session)
    if not settings.get("deep_link_return_url"):
        return error_page("The platform did not say where to send the chosen views "
                          "(deep_link_return_url is missing).", 400)
    if "ltiResourceLink" not in (settings.get("accept_types") or ()):
        return error_page("The platform does not accept LTI resource links here, the only "
                          "kind of content Mastery Hub places.", 400)
    return None


@bp.get("/s/<token>/deep-link")
@launched
def picker(session: LaunchSession):
    refused = _refusal(session)
    if refused:
        return refused
    course = _course(session)
    settings = settings_of(session)
    return render_template("lti/deep_link.html", session=session, course=course,
                           groups=grouped(choices_for(course)),
                           multiple=_flag(settings.get("accept_multiple")),
                           title=settings.get("title"), text=settings.get("text"))


@bp.post("/s/<token>/deep-link")
@launched
def respond(session: LaunchSession):
    """Sign the chosen views as an LtiDeepLinkingResponse and post it to the platform."""
    refused = _refusal(session)
    if refused:
        return refused
    settings = settings_of(session)
    course = _course(session)
    available = {c.value: c for c in choices_for(course)}
    picked = request.form.getlist("item")
    problem = None
    if not picked:
        problem = "Choose at least one view to place."
    elif len(set(picked)) != len(picked):
        problem = "The same view was chosen twice."
    elif len(picked) > 1 and not _flag(settings.get("accept_multiple")):
        problem = "The course accepts one view at a time here; choose just one."
    elif any(p not in available for p in picked):
        unknown = next(p for p in picked if p not in available)
        problem = f"“{unknown}” is not a view of this course."
    if problem:
        return render_template("lti/deep_link.html", session=session, course=course,
                               groups=grouped(list(available.values())), error=problem,
                               multiple=_flag(settings.get("accept_multiple")),
                               title=settings.get("title"), text=settings.get("text"),
                               picked=picked), 400
    platform = Platform.objects(identifier=session.platform).first()
    if platform is None or platform.status != "active":
        return error_page("The platform of this launch is no longer registered.", 401)
    resources = [DeepLinkResource().set_title(available[p].title).set_url(launch_url())
                 .set_custom_params(dict(available[p].custom)) for p in picked]
    deep_link = DeepLink(registration_of(platform), session.deployment or "", settings)
    message = deep_link.get_message_jwt(resources)
    if settings.get("data") is None:
        message.pop(DATA_CLAIM, None)  # echo data only when the platform sent some
    token = deep_link.encode_jwt(message)
    current_app.logger.info("deep linking: %s placed %s in %s", session.user,
                            ", ".join(picked), session.context)
    return render_template("lti/deep_link_response.html",
                           return_url=settings["deep_link_return_url"], jwt=token,
                           count=len(resources))


# -- where launches land -------------------------------------------------------------
def deep_linking_landing(session: LaunchSession) -> str:
    return base_url() + url_for("lti_deep_linking.picker", token=session.token)


def resource_link_landing(session: LaunchSession) -> str:
    """A placed view: the custom parameters of the link say which one."""
    custom = claims_of(session).get(CLAIM + "custom") or {}
    view = str(custom.get("masteryhub_view") or "").strip()
    args: dict[str, str] = {}
    if view in VIEWS:
        args["view"] = view
        if view == "competency" and custom.get("masteryhub_competency"):
            args["competency"] = str(custom["masteryhub_competency"])
        if view == "credit" and custom.get("masteryhub_credit"):
            args["credit"] = str(custom["masteryhub_credit"])
    return base_url() + url_for("lti.home", token=session.token, **args)


def requested_view() -> dict | None:
    """The view a placed link asked for (``?view=``), described for the home page."""
    view = request.args.get("view")
    if view not in VIEWS:
        return None
    out = {"view": view, "label": {"dashboard": "Learner dashboard",
                                   "competency": "Competency", "credit": "Course credit"}[view]}
    if view == "competency" and request.args.get("competency"):
        ref = request.args["competency"]
        comp = Competency.objects(identifier=ref).first() or \
            Competency.objects(code=ref).first()
        out["item"] = ref
        out["name"] = f"{comp.code or comp.identifier} — {comp.statement}" if comp else None
    if view == "credit" and request.args.get("credit"):
        ref = request.args["credit"]
        rule = CreditRule.objects(identifier=ref).first()
        out["item"] = ref
        out["name"] = rule.name if rule else None
    return out


@bp.app_context_processor
def _inject_requested_view() -> dict:
    if request.endpoint != "lti.home":
        return {}
    return {"requested_view": requested_view()}


@bp.record_once
def _register_landings(state) -> None:
    landings = state.app.extensions.setdefault("lti.landing", {})
    landings[DEEP_LINKING_REQUEST] = deep_linking_landing
    landings.setdefault(RESOURCE_LINK_REQUEST, resource_link_landing)


def init_app(app) -> None:
    """Register the picker and the landing handlers of deep-linked views."""
    app.register_blueprint(bp)
