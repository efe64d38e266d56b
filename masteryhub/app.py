"""The Flask app factory: the one place where the LRS, the mapper and the LTI tool meet."""

from __future__ import annotations

import logging

from flask import Flask
from pymongo.errors import PyMongoError

from masteryhub.config import Settings
from masteryhub.database import connect, database_name
from masteryhub.embedded import EmbeddedServer


class DatabaseNotRunning(RuntimeError):
    pass


def resolve_mongodb_uri(settings: Settings) -> str:
    """The configured URI, or the embedded server already running for ``DATA_DIR``."""
    if settings.mongodb_uri:
        return settings.mongodb_uri
    state = EmbeddedServer(settings.data_dir).running()
    if state is None:
        raise DatabaseNotRunning(
            f"No MASTERYHUB_MONGODB_URI is set and no embedded database runs for "
            f"{settings.data_dir}. Use `masteryhub serve` (starts one), or "
            "`masteryhub db start` first.")
    return state.uri


def create_app(settings: Settings | None = None, *, mongodb_uri: str | None = None) -> Flask:
    """Build the app; nothing is connected or registered at import time.

    ``mongodb_uri`` overrides the settings' URI (the ``serve`` command passes the embedded
    server's address; tests pass their own server's).
    """
    settings = settings or Settings.from_env()
    uri = mongodb_uri or resolve_mongodb_uri(settings)
    from masteryhub import observability

    observability.configure_logging(settings)  # LOG_FORMAT json|text, request ids

    app = Flask("masteryhub", instance_path=str(settings.data_dir))
    if settings.proxy_hops:  # client address and scheme as the ingress saw them
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MASTERYHUB_SETTINGS=settings,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        SESSION_COOKIE_HTTPONLY=True,
    )
    db = connect(uri, database_name(uri, settings.db_name), settings.db_timeout_ms)
    app.extensions["masteryhub.db"] = db
    app.extensions["masteryhub.settings"] = settings
    observability.init_app(app, settings)  # first hooks: request id, access log, /metrics

    from lrs.store import StatementStore
    from lrs.web import init_app as init_lrs
    from masteryhub.health import bp as health_bp

    app.register_blueprint(health_bp)

    def make_store() -> StatementStore:
        store = StatementStore(db)
        try:
            store.ensure_indexes()
            from lti_tool.models import ensure_indexes as ensure_lti_indexes
            from mappings.models import ensure_indexes as ensure_mapping_indexes

            ensure_mapping_indexes()
            ensure_lti_indexes()
        except PyMongoError as exc:
            # Start anyway: /healthz reports the outage, and the next start creates them.
            logging.getLogger(__name__).warning("database unavailable at start: %s", exc)
        return store

    init_lrs(app, make_store, base_url=settings.base_url)

    from lti_tool.api import bp as api_bp
    from lti_tool.course_setup import bp as course_setup_bp
    from lti_tool.pages import assets as assets_bp
    from lti_tool.pages import bp as pages_bp
    from lti_tool.registration_web import bp as lti_registration_bp
    from lti_tool.web import bp as lti_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(lti_bp)
    app.register_blueprint(pages_bp)
    from lti_tool.teacher import bp as teacher_bp

    app.register_blueprint(teacher_bp)
    app.register_blueprint(assets_bp)
    app.register_blueprint(course_setup_bp)
    app.register_blueprint(lti_registration_bp)
    from lti_tool.grades_web import bp as lti_grades_bp

    app.register_blueprint(lti_grades_bp)
    from lti_tool.deep_linking import init_app as init_deep_linking

    init_deep_linking(app)
    from lti_tool.admin import init_app as init_admin

    init_admin(app)  # /admin: operator accounts, not LMS users
    if not settings.production:
        from lti_tool import demo_platform

        demo_platform.init_app(app)
    return app
