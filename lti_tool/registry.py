"""Platform registrations for pylti1p3, read from MongoDB (one ToolConf for every platform).

Every issuer is treated as possibly having many client ids (Canvas: one issuer, one
developer key per school), so lookups are always by (issuer, client_id).
"""

from __future__ import annotations

import re

from pylti1p3.deployment import Deployment
from pylti1p3.registration import Registration
from pylti1p3.tool_config import ToolConfAbstract

from lti_tool import keys
from lti_tool.models import Platform

_SLUG = re.compile(r"[^a-z0-9]+")


class RegistrationError(ValueError):
    """A registration that cannot be saved: the message names the field and the problem."""


class ToolRegistration(Registration):
    """A registration that signs with our active key and names it by its kid."""

    def __init__(self, platform: Platform, key):
        super().__init__()
        self.platform = platform
        self._kid = key.kid

    def get_kid(self) -> str:
        return self._kid


def registration_of(platform: Platform) -> ToolRegistration:
    key = keys.active_key()
    reg = ToolRegistration(platform, key)
    reg.set_issuer(platform.issuer).set_client_id(platform.client_id) \
        .set_key_set_url(platform.key_set_url).set_auth_token_url(platform.auth_token_url) \
        .set_auth_login_url(platform.auth_login_url) \
        .set_tool_private_key(key.private_pem)
    if platform.auth_audience:
        reg.set_auth_audience(platform.auth_audience)
    return reg


def find_platform(issuer: str, client_id: str | None) -> Platform | None:
    """The active registration for an issuer (and client id, when the platform sent one).

    Without a client id an issuer must have exactly one registration, or it is ambiguous.
    """
    query = {"issuer": issuer, "status": "active"}
    if client_id:
        query["client_id"] = client_id
    found = list(Platform.objects(**query).limit(2))
    return found[0] if len(found) == 1 else None


class MongoToolConf(ToolConfAbstract):
    def check_iss_has_one_client(self, iss: str) -> bool:
        return False

    def check_iss_has_many_clients(self, iss: str) -> bool:
        return True

    def find_registration_by_issuer(self, iss: str, *args, **kwargs) -> Registration | None:
        platform = find_platform(iss, None)
        return registration_of(platform) if platform else None

    def find_registration_by_params(self, iss: str, client_id: str, *args,
                                    **kwargs) -> Registration | None:
        platform = find_platform(iss, client_id)
        return registration_of(platform) if platform else None

    def find_deployment(self, iss: str, deployment_id: str) -> Deployment | None:
        platform = find_platform(iss, None)
        return _deployment(platform, deployment_id)

    def find_deployment_by_params(self, iss: str, deployment_id: str, client_id: str,
                                  *args, **kwargs) -> Deployment | None:
        return _deployment(find_platform(iss, client_id), deployment_id)

    def get_jwks(self, iss: str | None = None, client_id: str | None = None, **kwargs):
        return {"keys": keys.published()}


def _deployment(platform: Platform | None, deployment_id: str) -> Deployment | None:
    if platform is None or deployment_id not in (platform.deployments or ()):
        return None
    return Deployment().set_deployment_id(deployment_id)


def add_platform(*, name: str, issuer: str, client_id: str, auth_login_url: str,
                 auth_token_url: str, key_set_url: str, deployments: list[str] | None = None,
                 auth_audience: str | None = None, product: str | None = None,
                 identifier: str | None = None) -> Platform:
    """Register a platform (or add deployments to an existing registration of the same
    issuer and client id). Raises RegistrationError naming the bad field."""
    for field, value in (("issuer", issuer), ("auth_login_url", auth_login_url),
                         ("auth_token_url", auth_token_url), ("key_set_url", key_set_url)):
        if not value or not re.match(r"^https?://[^\s/]+", value):
            raise RegistrationError(f"{field}: {value!r} is not an http(s) URL")
    if not client_id or not client_id.strip():
        raise RegistrationError("client_id: must not be empty")
    existing = Platform.objects(issuer=issuer, client_id=client_id).first()
    if existing is not None:
        added = [d for d in deployments or () if d not in existing.deployments]
        existing.update(push_all__deployments=added, set__name=name,
                        set__auth_login_url=auth_login_url, set__auth_token_url=auth_token_url,
                        set__key_set_url=key_set_url, set__status="active",
                        set__auth_audience=auth_audience, set__product=product)
        existing.reload()
        return existing
    identifier = identifier or _unique_slug(name or issuer)
    platform = Platform(identifier=identifier, name=name or issuer, issuer=issuer,
                        client_id=client_id, auth_login_url=auth_login_url,
                        auth_token_url=auth_token_url, key_set_url=key_set_url,
                        deployments=list(dict.fromkeys(deployments or ())),
                        auth_audience=auth_audience, product=product)
    platform.save(force_insert=True)
    return platform


def add_deployment(platform: Platform, deployment_id: str) -> bool:
    """Record a deployment id; True if it was new."""
    if not deployment_id or deployment_id in platform.deployments:
        return False
    return bool(Platform.objects(identifier=platform.identifier,
                                 deployments__ne=deployment_id)
                .update_one(push__deployments=deployment_id))


def _unique_slug(text: str) -> str:
    base = _SLUG.sub("-", text.lower().split("://")[-1]).strip("-")[:40] or "platform"
    slug, n = base, 1
    while Platform.objects(identifier=slug).first() is not None:
        n += 1
        slug = f"{base}-{n}"
    return slug
