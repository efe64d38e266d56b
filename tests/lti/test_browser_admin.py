"""The admin area in Chromium: sign in, every page (screenshot + axe), a credential whose
secret shows once, the sample framework imported by upload, the sample rules uploaded, and
a dry run that shows the matching rule."""

from __future__ import annotations

import json
from pathlib import Path

from lti_tool import admin_auth

DATA = Path(__file__).resolve().parents[2] / "mappings" / "data"
EMAIL = "ops@hub.example.edu"
PASSWORD = "correct horse battery staple"


def test_admin_pages_in_a_browser(page, check_page, lti_app, tool_url, quiz):
    page.goto(tool_url + "/admin/login")
    assert page.get_by_text("No admin account exists yet").is_visible()
    check_page(page, "login-no-admin")
    with lti_app.app_context():
        admin_auth.add_admin(EMAIL, PASSWORD)

    # any admin page sends a visitor to the sign-in form, and back after it
    page.goto(tool_url + "/admin/credentials")
    assert "/admin/login" in page.url
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().strip() == "Wrong email or password."
    check_page(page, "login-failed")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/admin/credentials")
    check_page(page, "credentials")

    # a credential: the secret is on the result page once, not after a reload
    page.get_by_label("Provider name").fill("Algebra Online")
    page.get_by_label("all/read").check()
    page.get_by_role("button", name="Create credential").click()
    secret = page.get_by_test_id("credential-secret").inner_text()
    assert len(secret) >= 30
    check_page(page, "credential-created")
    page.reload()
    assert page.get_by_test_id("credential-secret").count() == 0
    assert secret not in page.content()
    assert page.get_by_text("not shown again").is_visible()

    # the sample framework, uploaded as YAML
    page.get_by_role("link", name="Frameworks").click()
    check_page(page, "frameworks-empty")
    page.get_by_label("File (CASE JSON or YAML)").set_input_files(
        str(DATA / "sample_framework.yaml"))
    page.get_by_role("button", name="Import").click()
    assert page.get_by_role("heading", name="Algebra I (competency-based)").is_visible()
    assert page.get_by_text("Imported 'Algebra I (competency-based)'").is_visible()
    assert page.get_by_text("ALG.1.1", exact=True).first.is_visible()
    check_page(page, "framework")

    # the sample rules, uploaded; a dry run matches the quiz rule
    page.get_by_role("link", name="Rules").click()
    page.get_by_label("Rule file (YAML)").set_input_files(str(DATA / "sample_rules.yaml"))
    page.get_by_role("button", name="Validate and save").click()
    assert page.get_by_text("Loaded rule set 'algebra-1-sample'").is_visible()
    check_page(page, "ruleset")
    page.get_by_role("link", name="Rules", exact=True).click()
    check_page(page, "rules")
    page.get_by_role("link", name="Try a statement against them (dry run)").click()
    statement = quiz("ana@school.example.edu", "ALG.1.1", 0.9, when="2026-10-01T10:00:00Z")
    page.get_by_label("Statement (JSON)").fill(json.dumps(statement, indent=2))
    page.get_by_role("button", name="Try it").click()
    checks = page.get_by_test_id("checks")
    row = checks.get_by_role("row").filter(has_text="quiz-alg-1-1")
    assert "match" in row.inner_text()
    assert "ALG.1.1" in page.get_by_test_id("drafts").inner_text()
    check_page(page, "dry-run")
    page.get_by_label("Statement (JSON)").fill("{not json")
    page.get_by_role("button", name="Try it").click()
    assert "Not JSON" in page.get_by_role("alert").inner_text()

    # platforms: an invitation link, shown once
    page.get_by_role("link", name="Platforms").click()
    check_page(page, "platforms")
    page.get_by_label("Who it is for (optional)").fill("Riverside HS Moodle")
    page.get_by_role("button", name="Create invitation link").click()
    url = page.get_by_label("Registration URL").input_value()
    assert url.startswith(tool_url + "/lti/register?invite=")
    check_page(page, "invitation")
    page.get_by_role("link", name="Back to platforms").click()
    site = "https://moodle.school.edu"
    for label, value in (("Name (shown to admins)", "Riverside Moodle"), ("Issuer (iss)", site),
                         ("Client ID", "mh-1"),
                         ("Platform OIDC authentication request URL", site + "/mod/lti/auth.php"),
                         ("Platform OAuth2 access token URL", site + "/mod/lti/token.php"),
                         ("Platform public keyset (JWKS) URL", site + "/mod/lti/certs.php")):
        page.get_by_label(label).fill(value)
    page.get_by_role("button", name="Register platform").click()
    assert page.get_by_role("heading", name="Riverside Moodle").is_visible()
    assert page.get_by_text(tool_url + "/lti/launch").first.is_visible()
    check_page(page, "platform")

    page.get_by_role("link", name="Status").click()
    assert page.get_by_test_id("audit").get_by_text("credential.create").is_visible()
    check_page(page, "status")
    page.get_by_role("button", name="Sign out").click()
    assert "/admin/login" in page.url
    page.goto(tool_url + "/admin/status")
    assert "/admin/login" in page.url
