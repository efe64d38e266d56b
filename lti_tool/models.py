"""What the LTI tool keeps: platform registrations, its own signing keys, single-use login
states, server-side launch sessions, and the courses (LTI contexts) it is used in.

Everything lives in MongoDB so any number of app processes share it, and so that a launch
inside an LMS iframe never depends on a third-party cookie.
"""

from __future__ import annotations

import datetime as dt

import mongoengine as me

from mappings.models import utcnow


class Platform(me.Document):
    """One LMS registration: an issuer and the client id it gave us.

    Canvas uses one issuer for every school, with one client id (developer key) each; Moodle
    one issuer per site. So (issuer, client_id) is the key, and deployments hang below it.
    """

    identifier = me.StringField(primary_key=True)  # short slug, shown to admins
    name = me.StringField(required=True)
    issuer = me.StringField(required=True)
    client_id = me.StringField(required=True)
    auth_login_url = me.StringField(required=True)  # the platform's OIDC auth endpoint
    auth_token_url = me.StringField(required=True)  # OAuth2 token endpoint (AGS, NRPS)
    key_set_url = me.StringField(required=True)  # the platform's JWKS
    auth_audience = me.StringField()  # token endpoint audience, when it differs
    deployments = me.ListField(me.StringField())
    # Deployment ids in validly signed launches are recorded as they appear (Canvas adds
    # one each time the tool is installed in a sub-account or course); off = only listed.
    auto_deployments = me.BooleanField(default=True)
    product = me.StringField()  # "canvas", "moodle", ... (from dynamic registration)
    status = me.StringField(choices=("active", "disabled"), default="active")
    created_at = me.DateTimeField(default=utcnow)

    meta = {"collection": "lti_platforms",
            "indexes": [{"fields": ["issuer", "client_id"], "unique": True}]}


class ToolKey(me.Document):
    """An RSA key the tool signs with (client assertions, deep-linking responses).

    After a rotation the previous key stays published at /lti/jwks until ``retire_after``,
    because platforms cache our key set and tokens signed just before the rotation must
    still verify.
    """

    kid = me.StringField(primary_key=True)
    private_pem = me.StringField(required=True)
    public_jwk = me.DictField(required=True)
    created_at = me.DateTimeField(default=utcnow)
    active = me.BooleanField(default=True)  # the one key that signs
    retire_after = me.DateTimeField()  # set when superseded

    meta = {"collection": "lti_keys"}


class LoginState(me.Document):
    """An OIDC login in flight: the state and nonce we handed the platform.

    The launch consumes it atomically (find-and-delete on state *and* nonce), which is what
    makes an id_token single-use: pylti1p3 alone accepts a replayed token.
    """

    state = me.StringField(primary_key=True)
    nonce = me.StringField(required=True)
    platform = me.StringField(required=True)
    target_link_uri = me.StringField()
    login_params = me.DictField()  # to restart the login in a new window if needed
    storage_target = me.StringField()  # lti_storage_target: platform storage in use
    created_at = me.DateTimeField(default=utcnow)
    expires_at = me.DateTimeField(required=True)

    meta = {"collection": "lti_login_states", "indexes": ["expires_at"]}


class LaunchSession(me.Document):
    """A validated launch, kept server-side and found by an unguessable token that the
    pages carry in their URLs and forms, so nothing depends on (third-party) cookies."""

    token = me.StringField(primary_key=True)
    platform = me.StringField(required=True)
    deployment = me.StringField()
    user = me.StringField(required=True)  # "iss|sub"
    learner = me.StringField()  # the mappings learner this LTI user is
    name = me.StringField()
    email = me.StringField()
    roles = me.ListField(me.StringField())  # normalised: learner, instructor, mentor, ...
    raw_roles = me.ListField(me.StringField())
    mentees = me.ListField(me.StringField())  # learner ids, for mentors
    context = me.StringField()  # Course.identifier, if the launch has a context
    message_type = me.StringField()
    claims_json = me.StringField()  # the id_token body, exactly (claim names are URLs)
    pending = me.BooleanField(default=False)  # awaiting the platform-storage state check
    created_at = me.DateTimeField(default=utcnow)
    expires_at = me.DateTimeField(required=True)

    meta = {"collection": "lti_sessions", "indexes": ["expires_at"]}

    @property
    def is_staff(self) -> bool:
        return bool({"instructor", "administrator"} & set(self.roles))

    def expired(self, now: dt.datetime | None = None) -> bool:
        now = now or utcnow()
        expires = self.expires_at
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        return expires <= now


class Course(me.Document):
    """An LTI context (a course in Canvas or Moodle) and what it uses from the catalog."""

    identifier = me.StringField(primary_key=True)  # "platform|context id"
    platform = me.StringField(required=True)
    context_id = me.StringField(required=True)
    title = me.StringField()
    label = me.StringField()
    frameworks = me.ListField(me.StringField())
    competencies = me.ListField(me.StringField())  # empty: every one of the frameworks
    credit_rules = me.ListField(me.StringField())
    ags = me.DictField()  # the latest AGS claim (lineitems URL, scopes)
    nrps_url = me.StringField()
    updated_at = me.DateTimeField(default=utcnow)

    meta = {"collection": "lti_courses", "indexes": ["platform"]}


class Membership(me.Document):
    """Who belongs to a course, from launches and from the NRPS roster."""

    identifier = me.StringField(primary_key=True)  # "course|user"
    course = me.StringField(required=True)
    user = me.StringField(required=True)  # "iss|sub"
    learner = me.StringField()
    name = me.StringField()
    email = me.StringField()
    roles = me.ListField(me.StringField())
    status = me.StringField(default="Active")
    source = me.StringField(choices=("launch", "roster"), default="launch")
    updated_at = me.DateTimeField(default=utcnow)

    meta = {"collection": "lti_memberships", "indexes": ["course", "learner"]}


class Goal(me.Document):
    """What a learner chose to work on next in a course."""

    identifier = me.StringField(primary_key=True)  # "learner|course"
    learner = me.StringField(required=True)
    course = me.StringField()
    competencies = me.ListField(me.StringField())
    updated_at = me.DateTimeField(default=utcnow)

    meta = {"collection": "lti_goals"}


MODELS = (Platform, ToolKey, LoginState, LaunchSession, Course, Membership, Goal)


def ensure_indexes() -> None:
    for model in MODELS:
        model.ensure_indexes()
