"""The platform's key set is cached (not fetched on every launch), and a key rotation on
the platform is still picked up: an unknown kid makes the tool fetch the key set again."""

from __future__ import annotations

import datetime as dt
import re
from html import unescape

import pytest
from jwcrypto import jwk
from mongoengine.connection import get_db

from lti_tool import platform_keys


def auto_post_form(html: str) -> tuple[str, dict[str, str]]:
    """The (action, fields) of a self-submitting form, as a browser would post it."""
    action = re.search(r'<form[^>]*action="([^"]+)"', html)
    assert action, html[:500]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)
    return unescape(action.group(1)), {unescape(k): unescape(v) for k, v in fields}


@pytest.fixture
def fetches(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = platform_keys._fetch

    def counting(url, session):
        seen.append(url)
        return real(url, session)

    monkeypatch.setattr(platform_keys, "_fetch", counting)
    return seen


def launched(browser, platform) -> bool:
    return browser.launch(platform.prepare(role="learner")).status_code == 303


def rotate(platform) -> None:
    key = jwk.JWK.generate(kty="RSA", size=2048)
    platform.registration.set_platform_private_key(key.export_to_pem(True, None).decode())
    platform.registration.set_platform_public_key(key.export_to_pem().decode())


def age_cache(lti_app, seconds: int) -> None:
    with lti_app.app_context():
        get_db()[platform_keys.COLLECTION].update_many(
            {}, {"$set": {"fetched_at": platform_keys.utcnow() - dt.timedelta(seconds=seconds)}})


def test_key_set_is_fetched_once_for_many_launches(platform, browser, fetches):
    for _ in range(3):
        assert launched(browser, platform)
    assert fetches == [platform.base + "/platform/jwks"]


def test_a_rotated_platform_key_is_picked_up(platform, browser, lti_app, fetches):
    assert launched(browser, platform)
    old_kid = platform.kid
    rotate(platform)
    assert platform.kid != old_kid
    age_cache(lti_app, 60)  # cached a minute ago: still within its TTL
    assert launched(browser, platform)
    assert len(fetches) == 2
    assert launched(browser, platform)  # the refreshed set is cached again
    assert len(fetches) == 2


def test_unknown_kids_do_not_refetch_more_than_once_in_a_while(platform, browser, fetches):
    assert launched(browser, platform)
    rotate(platform)  # right after a fetch: nothing new expected, the launch is refused
    response = browser.launch(platform.prepare(role="learner"))
    assert response.status_code == 400 and "key id" in response.text
    assert len(fetches) == 1


def test_expired_cache_is_fetched_again(platform, browser, lti_app, fetches):
    assert launched(browser, platform)
    with lti_app.app_context():
        get_db()[platform_keys.COLLECTION].update_many(
            {}, {"$set": {"expires_at": platform_keys.utcnow() - dt.timedelta(seconds=1)}})
    assert launched(browser, platform)
    assert len(fetches) == 2


def test_login_and_launch_report_their_server_time(platform, browser):
    r = browser.http.get(platform.prepare(role="learner"), allow_redirects=False, timeout=10)
    assert r.headers["Server-Timing"].startswith("app;dur=")
    r = browser.http.get(r.headers["Location"], allow_redirects=False, timeout=10)
    action, fields = auto_post_form(r.text)
    launch = browser.post(action, fields)
    assert launch.status_code == 303
    assert float(launch.headers["Server-Timing"].split("dur=")[1]) > 0
