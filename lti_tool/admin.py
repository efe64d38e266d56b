"""The operator's admin area at /admin: LMS platforms, provider credentials, frameworks,
mapping rules (with a dry run) and system status.

Only Mastery Hub operators reach it: accounts of their own (``lti_tool.admin_auth``,
created with ``masteryhub admins add``), never LTI launches, because these pages manage
every school's registrations. Every page needs a signed-in session; every POST carries the
session's CSRF token; every change is written to the audit trail shown on the status page.

A thin Flask adapter: the work is done by the same functions the CLI uses (``lrs.auth``,
``lti_tool.registry``/``invites``, ``mappings.frameworks``/``rules``/``worker``).
Secrets that are shown once (a credential's secret, an invitation URL) are handed from the
POST to the page that shows them through the signed session cookie, popped on first view:
they are never written to the database, and reloading the page does not show them again.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections import defaultdict
from pathlib import PurePath
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import RequestEntityTooLarge

from lti_tool import admin_auth as auth

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates",
               static_folder="static", static_url_path="/static")

MAX_UPLOAD = 10 * 1024 * 1024  # a CASE package of a whole state's standards is a few MB
SID = "admin_sid"
LOGIN_CSRF = "admin_login_csrf"
REVEAL = "admin_reveal"  # a secret to show once, between a POST and the page after it
CSP = ("default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def init_app(app: Flask) -> None:
    # The session cookie is only ever set by these pages (LTI pages carry a token instead).
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["PERMANENT_SESSION_LIFETIME"] = auth.SESSION_LIFETIME
    app.register_blueprint(bp)


def _settings():
    return current_app.extensions["masteryhub.settings"]


def _db():
    return current_app.extensions["masteryhub.db"]


def _ip() -> str:
    # Behind a proxy this is the client's address only when forwarded headers are trusted
    # (ProxyFix); otherwise every client shares the proxy's throttle.
    return request.remote_addr or "unknown"


def _audit(action: str, target: str | None = None, detail: str | None = None) -> None:
    auth.audit(g.admin.email, action, target, detail, _ip())


def _page(template: str, status: int = 200, **context) -> tuple[str, int]:
    return render_template(template, **context), status


def _message(status: int, title: str, message: str) -> tuple[str, int]:
    return _page("admin/message.html", status, title=title, message=message)


def _form(name: str, limit: int = 2000) -> str:
    return (request.form.get(name) or "").strip()[:limit]


@bp.context_processor
def _context() -> dict:
    signed = g.get("admin")
    return {"admin_user": signed,
            "csrf_token": signed.csrf_token if signed else session.get(LOGIN_CSRF, ""),
            "iso": _iso}


def _iso(value: dt.datetime | None, seconds: bool = False) -> str:
    if value is None:
        return ""
    value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else "")
                                             + " UTC")


@bp.before_request
def _guard():
    request.max_content_length = MAX_UPLOAD
    g.admin = None
    if request.endpoint == "admin.static":
        return None
    g.admin = auth.load_session(session.get(SID))
    posting = request.method not in ("GET", "HEAD", "OPTIONS")
    if request.endpoint == "admin.login":
        if posting and not auth.tokens_equal(session.get(LOGIN_CSRF),
                                             request.form.get("csrf_token")):
            return _csrf_refused()
        return None
    if g.admin is None:
        if not posting:
            return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
        return _message(403, "Sign in first",
                        "This action needs a signed-in admin. Sign in and try again.")
    if posting and not auth.tokens_equal(g.admin.csrf_token, request.form.get("csrf_token")):
        return _csrf_refused()
    return None


def _csrf_refused():
    return _message(400, "The form could not be accepted",
                    "The form's security token is missing or does not belong to your session "
                    "(it may have expired). Go back, reload the page and try again.")


@bp.after_request
def _headers(response: Response) -> Response:
    if request.endpoint != "admin.static":
        response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(exc):
    return _message(413, "Too large", f"Uploads are limited to {MAX_UPLOAD // 2**20} MB.")


@bp.errorhandler(404)
def _not_found(exc):
    return _message(404, "Not found", exc.description or "There is nothing here.")


# -- signing in -------------------------------------------------------------------------------
def _safe_next(target: str | None) -> str:
    """Only a path inside /admin (never another site) is a place to return to."""
    parts = urlsplit(target or "")
    if (target and not parts.scheme and not parts.netloc and "\\" not in target
            and (parts.path == "/admin" or parts.path.startswith("/admin/"))
            and not parts.path.startswith("/admin/login")):
        return target
    return url_for("admin.status")


@bp.route("/login", methods=["GET", "POST"])
def login():
    target = _safe_next(request.values.get("next"))
    if g.admin is not None and request.method == "GET":
        return redirect(target)
    session.setdefault(LOGIN_CSRF, secrets.token_urlsafe(32))
    context = {"next": target, "email": _form("email", 254),
               "no_admin": not _settings().production and not auth.any_admin()}
    if request.method == "GET":
        return _page("admin/login.html", **context)
    try:
        account = auth.authenticate(context["email"], request.form.get("password") or "",
                                    _ip())
    except auth.LoginThrottled as exc:
        auth.audit(context["email"] or "(no email)", "login.throttled", ip=_ip())
        body, status = _page("admin/login.html", 429, error=str(exc), **context)
        return Response(body, status, headers={
            "Retry-After": str(int(exc.retry_after.total_seconds()) + 1)})
    if account is None:
        auth.audit(context["email"] or "(no email)", "login.failed", ip=_ip())
        return _page("admin/login.html", 403, error="Wrong email or password.", **context)
    auth.end_session(session.get(SID))
    session.clear()  # a new session id on every sign-in (no fixation)
    session[SID] = auth.start_session(account.email, _ip())
    session.permanent = True
    auth.audit(account.email, "login", ip=_ip())
    return redirect(target, 303)


@bp.post("/logout")
def logout():
    _audit("logout")
    auth.end_session(session.get(SID))
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("admin.login"), 303)


@bp.get("/")
def index():
    return redirect(url_for("admin.status"))


# -- platforms --------------------------------------------------------------------------------
PLATFORM_FIELDS = (("name", "Name (shown to admins)"), ("issuer", "Issuer (iss)"),
                   ("client_id", "Client ID"),
                   ("auth_login_url", "Platform OIDC authentication request URL"),
                   ("auth_token_url", "Platform OAuth2 access token URL"),
                   ("key_set_url", "Platform public keyset (JWKS) URL"),
                   ("deployment", "Deployment ID (optional; more are recorded at launch)"))


def _tool_urls():
    from lti_tool.dynamic_registration import ToolUrls

    return ToolUrls(_settings().base_url)


def _platforms_page(status: int = 200, **context):
    from lti_tool.invites import RegistrationInvite
    from lti_tool.models import Platform
    from mappings.models import utcnow

    return _page("admin/platforms.html", status,
                 platforms=list(Platform.objects.order_by("created_at")),
                 invites=list(RegistrationInvite.objects.order_by("-created_at").limit(20)),
                 now=utcnow(), urls=_tool_urls(), fields=PLATFORM_FIELDS,
                 values=context.pop("values", {}), **context)


@bp.get("/platforms")
def platforms():
    return _platforms_page()


@bp.post("/platforms")
def platform_add():
    from lti_tool.models import Platform
    from lti_tool.registry import RegistrationError, add_platform

    values = {name: _form(name, 500) for name, _ in PLATFORM_FIELDS}
    existing = Platform.objects(issuer=values["issuer"], client_id=values["client_id"]).first()
    if existing is not None:
        return _platforms_page(409, values=values, error=(
            f"This issuer and client ID are already registered as '{existing.identifier}'. "
            "Open it to add deployments or enable it."))
    try:
        platform = add_platform(
            name=values["name"] or values["issuer"], issuer=values["issuer"],
            client_id=values["client_id"], auth_login_url=values["auth_login_url"],
            auth_token_url=values["auth_token_url"], key_set_url=values["key_set_url"],
            deployments=[values["deployment"]] if values["deployment"] else [])
    except RegistrationError as exc:
        return _platforms_page(400, values=values, error=f"Not registered: {exc}")
    _audit("platform.add", platform.identifier, f"{platform.issuer} client {platform.client_id}")
    flash(f"Registered platform '{platform.identifier}'. Give the LMS admin the tool URLs "
          "below.")
    return redirect(url_for("admin.platform", identifier=platform.identifier), 303)


def _platform_or_404(identifier: str):
    from lti_tool.models import Platform

    platform = Platform.objects(identifier=identifier).first()
    if platform is None:
        abort(404, f"No platform '{identifier}'.")
    return platform


@bp.get("/platforms/<identifier>")
def platform(identifier: str):
    from lti_tool.invites import RegistrationInvite

    found = _platform_or_404(identifier)
    return _page("admin/platform.html", platform=found, urls=_tool_urls(),
                 invites=list(RegistrationInvite.objects(platform=identifier).limit(20)))


@bp.post("/platforms/<identifier>/deployments")
def platform_deployment(identifier: str):
    from lti_tool.registry import add_deployment

    found = _platform_or_404(identifier)
    deployment = (request.form.get("deployment_id") or "").strip()
    if not deployment or len(deployment) > 255:
        body, _ = _page("admin/platform.html", platform=found, urls=_tool_urls(), invites=[],
                        error="Give a deployment ID (up to 255 characters): the LMS shows it "
                              "when the tool is installed.")
        return body, 400
    if add_deployment(found, deployment):
        _audit("platform.deployment.add", identifier, deployment)
        flash(f"Deployment '{deployment}' added.")
    else:
        flash(f"Deployment '{deployment}' was already recorded.")
    return redirect(url_for("admin.platform", identifier=identifier), 303)


@bp.post("/platforms/<identifier>/status")
def platform_status(identifier: str):
    found = _platform_or_404(identifier)
    status = request.form.get("status")
    if status not in ("active", "disabled"):
        return _message(400, "Unknown status", "A platform is either active or disabled.")
    found.update(set__status=status)
    _audit(f"platform.{'enable' if status == 'active' else 'disable'}", identifier)
    flash(f"Platform '{identifier}' is now {status}"
          + (": its launches are refused." if status == "disabled" else "."))
    return redirect(url_for("admin.platform", identifier=identifier), 303)


@bp.post("/invitations")
def invitation_create():
    from lti_tool import invites

    try:
        days = int(request.form.get("expires_days") or "7")
    except ValueError:
        days = 0
    note = _form("note", 200)
    if not 1 <= days <= 90:
        return _platforms_page(400, error="An invitation expires after 1 to 90 days.")
    invite, token = invites.create_invite(dt.timedelta(days=days), note or None)
    session[REVEAL] = {"kind": "invite", "url": f"{_tool_urls().register}?invite={token}",
                       "expires_at": _iso(invite.expires_at), "note": note}
    _audit("platform.invite", note or None, f"expires {_iso(invite.expires_at)}")
    return redirect(url_for("admin.invitation_new"), 303)


@bp.get("/invitations/new")
def invitation_new():
    reveal = session.get(REVEAL)
    if isinstance(reveal, dict) and reveal.get("kind") == "invite":
        session.pop(REVEAL)
    else:
        reveal = None
    return _page("admin/invitation.html", reveal=reveal)


# -- credentials ------------------------------------------------------------------------------
DEFAULT_SCOPES = ("statements/write", "statements/read/mine", "state", "profile")


def _credentials_page(status: int = 200, **context):
    from lrs.auth import SCOPES, Credential

    return _page("admin/credentials.html", status,
                 credentials=list(Credential.objects.order_by("-created_at").limit(500)),
                 scopes=SCOPES, checked=context.pop("checked", DEFAULT_SCOPES), **context)


@bp.get("/credentials")
def credentials():
    return _credentials_page()


@bp.post("/credentials")
def credential_create():
    from lrs.auth import create_credential

    name = _form("name", 201)
    scopes = request.form.getlist("scopes")
    if len(name) > 200:
        return _credentials_page(400, error="The name is too long (at most 200 characters).",
                                 name=name, checked=scopes)
    try:
        credential, secret = create_credential(name, scopes)
    except ValueError as exc:
        return _credentials_page(400, error=f"Not created: {exc}", name=name, checked=scopes)
    session[REVEAL] = {"kind": "credential", "key": credential.key, "secret": secret}
    _audit("credential.create", credential.key,
           f"{credential.name} ({', '.join(credential.scopes)})")
    return redirect(url_for("admin.credential_created", key=credential.key), 303)


def _credential_or_404(key: str):
    from lrs.auth import Credential

    found = Credential.objects(key=key).first()
    if found is None:
        abort(404, f"No credential with key '{key}'.")
    return found


@bp.get("/credentials/<key>/created")
def credential_created(key: str):
    credential = _credential_or_404(key)
    reveal = session.get(REVEAL)
    secret = None
    if isinstance(reveal, dict) and reveal.get("kind") == "credential" \
            and reveal.get("key") == key:
        secret = session.pop(REVEAL)["secret"]
    return _page("admin/credential_created.html", credential=credential, secret=secret,
                 xapi_endpoint=_settings().base_url + "/xapi/")


@bp.route("/credentials/<key>/revoke", methods=["GET", "POST"])
def credential_revoke(key: str):
    from lrs.auth import revoke_credential

    credential = _credential_or_404(key)
    if request.method == "GET":
        return _page("admin/confirm.html", title=f"Revoke credential {credential.name}",
                     question=f"Revoke the credential '{credential.name}' (key {key})? The "
                              "provider's requests are refused from then on; statements it "
                              "sent stay. This cannot be undone.",
                     action=url_for("admin.credential_revoke", key=key), button="Revoke",
                     back=url_for("admin.credentials"))
    if credential.revoked_at is None:
        revoke_credential(key)
        _audit("credential.revoke", key, credential.name)
    flash(f"Credential '{credential.name}' ({key}) is revoked.")
    return redirect(url_for("admin.credentials"), 303)


# -- frameworks -------------------------------------------------------------------------------
def _frameworks_page(status: int = 200, **context):
    from mappings.frameworks import builtin_scales
    from mappings.models import Competency, CreditRule, Framework

    rows = []
    for framework in Framework.objects.order_by("title"):
        rows.append((framework, Competency.objects(framework=framework.identifier).count(),
                     CreditRule.objects(framework=framework.identifier).count()))
    return _page("admin/frameworks.html", status, frameworks=rows,
                 scales=sorted(builtin_scales()), values=context.pop("values", {}), **context)


@bp.get("/frameworks")
def frameworks():
    return _frameworks_page()


@bp.post("/frameworks")
def framework_import():
    from mappings import frameworks as fw

    upload = request.files.get("file")
    has_file = upload is not None and bool(upload.filename)
    url = _form("url", 2000)
    values = {"url": url, "scale": _form("scale", 100)}
    scale = values["scale"] or None

    def refused(message: str):
        return _frameworks_page(400, error=f"Nothing was imported: {message}", values=values)

    if has_file == bool(url):
        return refused("Choose a CASE JSON or YAML file, or give a CASE package URL (one of "
                       "the two).")
    if scale is not None and scale not in fw.builtin_scales():
        return refused(f"Unknown scale '{scale}'.")
    try:
        if has_file:
            name = PurePath(upload.filename.replace("\\", "/")).name or "upload"
            try:
                text = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                return refused(f"{name}: not a UTF-8 text file.")
            source = name
            if name.lower().endswith((".yaml", ".yml")):
                imported = fw.parse_yaml_framework(text, filename=name)
            else:
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    return refused(f"{name}: not JSON ({exc}). A YAML framework file must end "
                                   "in .yaml or .yml.")
                imported = fw.parse_case_package(data, source=name, scale=scale)
        else:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                return refused(f"'{url}' is not an http(s) URL of a CASE package, e.g. "
                               "https://case.example.org/ims/case/v1p1/CFPackages/ID")
            source = url
            token = _form("token", 4000) or None
            imported = fw.parse_case_package(fw.fetch_case_package(url, token=token,
                                                                   timeout=20),
                                             source=url, scale=scale)
        saved = fw.save_framework(imported)
    except fw.FrameworkError as exc:
        return refused(str(exc))
    _audit("framework.import", saved.identifier,
           f"{source}: {len(imported.competencies)} competencies, "
           f"{len(imported.credit_rules)} credit rule(s)")
    flash(f"Imported '{saved.title}': {len(imported.competencies)} competencies, "
          f"{len(imported.credit_rules)} credit rule(s).")
    for warning in imported.warnings:
        flash(f"Warning: {warning}", "warning")
    return redirect(url_for("admin.framework", identifier=saved.identifier), 303)


@bp.get("/frameworks/<path:identifier>")
def framework(identifier: str):
    from mappings.models import Competency, CreditRule, Framework

    found = Framework.objects(identifier=identifier).first()
    if found is None:
        abort(404, f"No framework '{identifier}'.")
    competencies = list(Competency.objects(framework=identifier).order_by("position"))
    by_id = {c.identifier: c for c in competencies}
    children: dict[str | None, list] = defaultdict(list)
    for c in competencies:
        children[c.parent if c.parent in by_id else None].append(c)
    tree: list[tuple[int, object, bool]] = []
    seen: set[str] = set()

    def walk(parent: str | None, depth: int) -> None:
        for c in children.get(parent, ()):
            if c.identifier in seen:
                continue
            seen.add(c.identifier)
            tree.append((depth, c, bool(children.get(c.identifier))))
            walk(c.identifier, depth + 1)

    walk(None, 0)
    label = {c.identifier: c.code or c.identifier for c in competencies}
    rules = list(CreditRule.objects(framework=identifier))
    return _page("admin/framework.html", framework=found, tree=tree, label=label,
                 credit_rules=rules)


# -- rules ------------------------------------------------------------------------------------
def _rules_page(status: int = 200, **context):
    from mappings.models import RuleSet

    return _page("admin/rules.html", status, rulesets=list(RuleSet.objects.order_by("name")),
                 **context)


@bp.get("/rules")
def rules():
    return _rules_page()


@bp.post("/rules")
def rules_upload():
    from mappings import catalog as catalog_module
    from mappings.models import RuleSet
    from mappings.rules import RuleError, load_ruleset

    save = request.form.get("action") == "save"
    upload = request.files.get("file")
    text = ""
    filename = "pasted.yaml"
    if upload is not None and upload.filename:
        filename = PurePath(upload.filename.replace("\\", "/")).name or "upload.yaml"
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            return _rules_page(400, error=f"{filename}: not a UTF-8 text file.")
    else:
        text = request.form.get("text") or ""
    if not text.strip():
        return _rules_page(400, error="Choose a rule file (YAML) or paste its text.",
                           text=text)
    try:
        ruleset = load_ruleset(text, filename=filename,
                               competencies=catalog_module.load().infos)
    except RuleError as exc:
        return _rules_page(400, problems=[str(p) for p in exc.problems], filename=filename,
                           text=text if upload is None or not upload.filename else "")
    if not save:
        return _rules_page(valid=f"{filename} is valid: rule set '{ruleset.name}', "
                                 f"{len(ruleset.rules)} rule(s). Nothing was saved.",
                           text=text if upload is None or not upload.filename else "")
    replaced = RuleSet.objects(name=ruleset.name).first() is not None
    RuleSet(name=ruleset.name, text=text, rules=ruleset.to_dicts()).save()
    catalog_module.bump()
    _audit("rules.replace" if replaced else "rules.load", ruleset.name,
           f"{filename}: {len(ruleset.rules)} rule(s)")
    flash(f"{'Replaced' if replaced else 'Loaded'} rule set '{ruleset.name}': "
          f"{len(ruleset.rules)} rule(s). Running workers use it from their next batch.")
    return redirect(url_for("admin.ruleset", name=ruleset.name), 303)


def _ruleset_or_404(name: str):
    from mappings.models import RuleSet

    found = RuleSet.objects(name=name).first()
    if found is None:
        abort(404, f"No rule set '{name}'.")
    return found


@bp.get("/rules/set/<name>")
def ruleset(name: str):
    found = _ruleset_or_404(name)
    return _page("admin/ruleset.html", ruleset=found, lines=found.text.splitlines())


@bp.route("/rules/set/<name>/remove", methods=["GET", "POST"])
def ruleset_remove(name: str):
    from mappings import catalog as catalog_module

    found = _ruleset_or_404(name)
    if request.method == "GET":
        return _page("admin/confirm.html", title=f"Remove rule set {name}",
                     question=f"Remove the rule set '{name}' ({len(found.rules)} rule(s))? "
                              "The mapping worker then maps the stored statements again: "
                              "evidence only these rules produced becomes superseded (kept "
                              "for the record, no longer counted), and mastery and credit "
                              "are recomputed.",
                     action=url_for("admin.ruleset_remove", name=name), button="Remove",
                     back=url_for("admin.ruleset", name=name))
    found.delete()
    catalog_module.bump()
    _audit("rules.remove", name)
    flash(f"Removed rule set '{name}'.")
    return redirect(url_for("admin.rules"), 303)


@bp.route("/rules/dry-run", methods=["GET", "POST"])
def dry_run():
    """Which rules a statement matches and the evidence it would produce; stores nothing."""
    from lrs.auth import Credential
    from lrs.errors import XAPIValidationError
    from lrs.validation import validate_statement
    from mappings import catalog as catalog_module
    from mappings.rules import explain_statement

    if request.method == "GET":
        return _page("admin/dry_run.html", statement="", provider="")
    text = request.form.get("statement") or ""
    provider = _form("provider", 200)
    context = {"statement": text, "provider": provider}
    try:
        stmt = json.loads(text)
    except json.JSONDecodeError as exc:
        return _page("admin/dry_run.html", 400, error=f"Not JSON: {exc}", **context)
    if not isinstance(stmt, dict):
        return _page("admin/dry_run.html", 400,
                     error="Paste one statement: a JSON object, not "
                           f"{'an array' if isinstance(stmt, list) else type(stmt).__name__}.",
                     **context)
    try:
        validate_statement(stmt)
    except XAPIValidationError as exc:
        return _page("admin/dry_run.html", 400, error=f"Not a valid xAPI statement: {exc}",
                     **context)
    catalog = catalog_module.load()
    explanation = explain_statement(stmt, catalog.rulesets, catalog.infos,
                                    provider=provider or None)
    notes = []
    if provider and Credential.objects(key=provider).first() is None:
        notes.append(f"No credential has the key '{provider}': rules that name a provider "
                     "were tried against it anyway.")
    if not catalog.rulesets:
        notes.append("No rule sets are loaded: only statements carrying a competency's CASE "
                     "URI produce evidence.")
    checks = sorted(explanation.rules, key=lambda c: not c.matched)
    competency = {cid: (c.code or cid, c.statement) for cid, c in catalog.competencies.items()}
    return _page("admin/dry_run.html", explanation=explanation, checks=checks, notes=notes,
                 competency=competency, **context)


# -- status -----------------------------------------------------------------------------------
@bp.get("/status")
def status():
    from lrs.auth import Credential
    from lti_tool import grades, sync
    from lti_tool.models import Platform
    from mappings.models import Framework, RuleSet
    from mappings.worker import worker_status_of

    db = _db()
    worker = worker_status_of(db)
    mapping_errors = list(db["mapping_errors"].find().sort("at", -1).limit(20))
    sync_failures = list(db[sync.FAILURES].find().sort("last_attempt_at", -1).limit(50))
    failed_scores = list(db[grades.QUEUE].find({"attempts": {"$gt": 0}})
                         .sort("next_attempt_at", 1).limit(20))
    counts = {"platforms": Platform.objects.count(),
              "active credentials": Credential.objects(revoked_at=None).count(),
              "frameworks": Framework.objects.count(), "rule sets": RuleSet.objects.count()}
    return _page("admin/status.html", worker=worker, mapping_errors=mapping_errors,
                 sync_failures=sync_failures, failed_scores=failed_scores, counts=counts,
                 audit=auth.recent_audit(50))
