"""LTI Platform Storage: when the tool's cookies are blocked in the LMS iframe (here: the
frame is cross-site, so the browser withholds its SameSite=Lax state cookie on the
platform's POST), the login state lives in the platform's frame through postMessage and
the launch is still bound to this browser."""

from __future__ import annotations

import json
import re
from html import unescape

from lti_tool.demo_platform import DemoPlatform
from lti_tool.models import LaunchSession


def test_launch_in_a_cross_site_frame_uses_platform_storage(lti_app, tool_url, page):
    # The platform at "localhost", the tool at "127.0.0.1": two different sites.
    platform_base = tool_url.replace("127.0.0.1", "localhost") + "/demo"
    with lti_app.app_context():
        demo = DemoPlatform(platform_base, tool_url)
        demo.register_with_tool()
        lti_app.extensions["demo_platform"] = demo
    page.goto(platform_base + "/frame?role=learner")
    frame = page.frame(name="tool")
    frame.wait_for_url("**/learner/*/", timeout=15_000)
    assert "My progress" in frame.inner_text("h1")
    with lti_app.app_context():
        (session,) = LaunchSession.objects
        assert not session.pending  # confirmed through the platform's storage


def test_launch_is_refused_when_the_platform_storage_lacks_the_state(lti_app, tool_url,
                                                                     browser):
    """A launch posted without the state cookie and without the platform's frame (as an
    attacker replaying a captured form would) never becomes a usable session."""
    platform_base = tool_url.replace("127.0.0.1", "localhost") + "/demo"
    with lti_app.app_context():
        demo = DemoPlatform(platform_base, tool_url)
        demo.register_with_tool()
        lti_app.extensions["demo_platform"] = demo
    login = demo.prepare(role="learner", storage_target="_parent")
    r = browser.http.get(login, allow_redirects=False, timeout=10)
    assert r.status_code == 200 and "lti.put_data" in r.text  # the storage login page
    auth = json.loads(re.search(r"window.location.href = (\"[^\"]+\")", r.text).group(1))
    form = browser.http.get(auth, timeout=10).text
    action = unescape(re.search(r'<form[^>]*action="([^"]+)"', form).group(1))
    fields = {unescape(k): unescape(v) for k, v in
              re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)}
    browser.http.cookies.clear()  # the cookie never reached the tool
    page = browser.post(action, fields)
    assert page.status_code == 200 and "lti.get_data" in page.text
    token = re.search(r"/lti/confirm/([^\"]+)", page.text).group(1)
    # the session exists but is pending: no page opens with it
    assert browser.http.get(f"{tool_url}/lti/s/{token}/", timeout=10).status_code == 401
