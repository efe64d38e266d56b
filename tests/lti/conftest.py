"""LTI fixtures: the app served on a real port that its BASE_URL names (the platform and
the tool call each other over HTTP), the demo platform (lti1p3platform) registered with it,
and a browser-like HTTP client that performs login and launch."""

from __future__ import annotations

import dataclasses
import re
import shutil
import threading
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from lti_tool.demo_platform import DemoPlatform
from masteryhub.app import create_app
from masteryhub.embedded import free_port


@pytest.fixture
def lti_app(settings, mongo_server_uri):
    port = free_port()
    settings = dataclasses.replace(settings, base_url=f"http://127.0.0.1:{port}")
    app = create_app(settings, mongodb_uri=mongo_server_uri)
    app.config["TESTING"] = True
    app.extensions["test_port"] = port
    return app


@pytest.fixture
def tool_url(lti_app) -> Iterator[str]:
    server = make_server("127.0.0.1", lti_app.extensions["test_port"], lti_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield lti_app.extensions["masteryhub.settings"].base_url
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def platform(lti_app, tool_url) -> DemoPlatform:
    with lti_app.app_context():
        demo = DemoPlatform(tool_url + "/demo", tool_url)
        demo.register_with_tool()
        lti_app.extensions["demo_platform"] = demo
    return demo


FORM_FIELD = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')


def auto_post_form(html: str) -> tuple[str, dict[str, str]]:
    """The (action, fields) of a self-submitting form, as a browser would post it."""
    action = FORM_ACTION.search(html)
    assert action, html[:500]
    return unescape(action.group(1)), {unescape(k): unescape(v)
                                       for k, v in FORM_FIELD.findall(html)}


class Browser:
    """requests with a cookie jar, walking the LTI redirects like a browser does."""

    def __init__(self):
        self.http = requests.Session()

    def start(self, login_url: str) -> tuple[str, dict[str, str]]:
        """Login initiation → platform auth → the id_token form the platform posts back."""
        r = self.http.get(login_url, allow_redirects=False, timeout=10)
        assert r.status_code == 302, (r.status_code, r.text[:500])
        r = self.http.get(r.headers["Location"], allow_redirects=False, timeout=10)
        assert r.status_code == 200, (r.status_code, r.text[:500])
        return auto_post_form(r.text)

    def post(self, action: str, fields: dict[str, str]) -> requests.Response:
        return self.http.post(action, data=fields, allow_redirects=False, timeout=10)

    def launch(self, login_url: str) -> requests.Response:
        """The whole launch; returns the tool's answer to the id_token POST."""
        action, fields = self.start(login_url)
        return self.post(action, fields)


@pytest.fixture
def browser() -> Browser:
    return Browser()


# -- competency data for page and grade tests ------------------------------------------------
@pytest.fixture
def sample_catalog(lti_app):
    """The sample framework (Algebra I, 13 competencies) and its mapping rules."""
    from importlib import resources

    from mappings import catalog as catalog_module
    from mappings.frameworks import sample_framework, save_framework
    from mappings.models import RuleSet
    from mappings.rules import load_ruleset

    with lti_app.app_context():
        save_framework(sample_framework())
        text = resources.files("mappings.data").joinpath("sample_rules.yaml").read_text()
        ruleset = load_ruleset(text, filename="sample_rules.yaml",
                               competencies=catalog_module.load().infos)
        RuleSet(name=ruleset.name, text=text, rules=ruleset.to_dicts()).save()
        catalog_module.bump()
        return catalog_module.load()


@pytest.fixture
def provider_auth(lti_app) -> dict[str, str]:
    """Headers of an xAPI provider with every scope, for statements posted to the app."""
    import base64

    from lrs.auth import create_credential

    with lti_app.app_context():
        credential, secret = create_credential("Course provider", ["all"])
    token = base64.b64encode(f"{credential.key}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}", "X-Experience-API-Version": "1.0.3"}


@pytest.fixture
def run_mapper(lti_app):
    """A function that runs the mapping worker until it has read everything stored."""
    from worker_drain import drain

    return lambda: drain(lti_app.extensions["masteryhub.db"])


def quiz_statement(email: str, code: str, scaled: float, *, when: str, n: int = 0) -> dict:
    """A course quiz result that the sample rules map to competency ``code``."""
    import uuid

    return {
        "id": str(uuid.uuid4()),
        "actor": {"objectType": "Agent", "name": email.split("@")[0], "mbox": f"mailto:{email}"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/passed", "display": {"en-US": "passed"}},
        "object": {"id": f"https://courses.example.com/algebra-1/{code}/quiz-{n}",
                   "definition": {"name": {"en-US": f"{code} quiz {n}"}}},
        "result": {"score": {"scaled": scaled}, "success": scaled >= 0.8},
        "timestamp": when,
    }


@pytest.fixture
def quiz():
    """Builds a quiz statement (see quiz_statement)."""
    return quiz_statement


# -- a real browser for the pages (Playwright + Debian's Chromium) ----------------------------
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it "
                    "(apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@pytest.fixture
def check_page(request):
    """check_page(page, name): screenshot to tests/artifacts/<test>-<name>.png and assert
    that axe finds no serious or critical accessibility violation."""
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    ARTIFACTS.mkdir(exist_ok=True)

    def check(page, name: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{_slug(request.node.name)}-{_slug(name)}.png"),
                        full_page=True)
        results = axe.run(page)
        serious = [v for v in results.response["violations"]
                   if v.get("impact") in ("serious", "critical")]
        assert not serious, f"{name}: " + "; ".join(
            f"{v['id']} ({v['impact']}): {v['help']} — "
            f"{[n['target'] for n in v['nodes']][:3]}" for v in serious)
    return check
