"""Registration pages for LMS admins: LTI Dynamic Registration at /lti/register, the Canvas
developer-key JSON at /lti/canvas.json, and the tool's logo.

A thin Flask adapter over ``lti_tool.dynamic_registration`` and ``lti_tool.invites``.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from lti_tool import invites
from lti_tool.dynamic_registration import (
    RegistrationFailed,
    ToolUrls,
    canvas_developer_key,
    register,
)

bp = Blueprint("lti_registration", __name__, url_prefix="/lti", template_folder="templates")

LOGO = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="64" height="64">
<rect width="64" height="64" rx="12" fill="#1f4e99"/>
<path d="M14 46V18h6l12 16 12-16h6v28h-7V30l-11 14-11-14v16z" fill="#fff"/>
</svg>
"""


def _settings():
    return current_app.extensions["masteryhub.settings"]


def tool_urls() -> ToolUrls:
    return ToolUrls(_settings().base_url)


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.get("/canvas.json")
def canvas_json():
    """Canvas > Admin > Developer Keys > + LTI Key > Method "Enter URL" (this URL) or
    "Paste JSON" (this document). Public: nothing in it is secret."""
    response = jsonify(canvas_developer_key(tool_urls()))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/logo.svg")
def logo():
    return Response(LOGO, mimetype="image/svg+xml",
                    headers={"Cache-Control": "public, max-age=86400"})


def _page(status: int, **context) -> tuple[str, int]:
    context.setdefault("operator_command", "masteryhub platforms invite")
    return render_template("lti/register.html", urls=tool_urls(), **context), status


@bp.get("/register")
def register_page():
    """Dynamic registration, started by the LMS with openid_configuration and (usually)
    registration_token added to the invitation URL we gave its admin."""
    token = request.args.get("invite") or None
    development = not _settings().production
    if token is not None:
        state = invites.invite_state(token)
        if state != "valid":
            reason = {"used": "has already been used",
                      "expired": "has expired"}.get(state, "is not valid")
            return _page(403, outcome="forbidden", reason=f"This registration invitation "
                         f"{reason}.")
    elif not development:
        return _page(403, outcome="forbidden",
                     reason="Registering with Mastery Hub needs an invitation.")

    config_url = request.args.get("openid_configuration")
    if not config_url:
        return _page(400, outcome="paste", development=development and token is None)

    if token is not None and not invites.claim(token):
        return _page(403, outcome="forbidden",
                     reason="This registration invitation has already been used.")
    try:
        result = register(config_url, request.args.get("registration_token") or None,
                          tool_urls(), allow_private=development or
                          _settings().registration_private_hosts)
    except RegistrationFailed as exc:
        if token is not None:
            invites.release(token)
        current_app.logger.info("dynamic registration refused: %s", exc.message)
        return _page(exc.status, outcome="failed", message=exc.message,
                     development=development and token is None)
    except Exception:
        if token is not None:
            invites.release(token)
        raise
    if token is not None:
        invites.use(token, result.platform.identifier)
    current_app.logger.info("dynamic registration: %s (%s, client id %s)",
                            result.platform.identifier, result.platform.issuer,
                            result.platform.client_id)
    return _page(200, outcome="registered", result=result, platform=result.platform,
                 development=development and token is None)
