"""The person behind an LTI launch, as a learner of the competency records.

An LTI user (issuer, sub) is the xAPI agent ``account{homePage: iss, name: sub}``; when the
platform shares the email, the ``mbox`` agent is the same person too. Linking both means
evidence posted by an internship platform that only knows the email, and by an online
course that uses LMS accounts, lands in one record.
"""

from __future__ import annotations

import logging

from lrs.keys import ifi
from lti_tool.models import Platform
from mappings import identity as mapping_identity
from mappings.models import Learner

log = logging.getLogger(__name__)


def lti_agent(iss: str, sub: str) -> dict:
    return {"objectType": "Agent", "account": {"homePage": iss, "name": sub}}


def learner_for_lti_user(iss: str, sub: str, *, email: str | None = None,
                         name: str | None = None) -> str:
    """The learner id for this LTI user, created or linked as needed.

    The email joins the record when nobody else owns it, or when its owner is a record
    that only providers know (statements that arrived before the learner's first launch).
    It never merges in a record that belongs to another LMS user: emails are shared by
    families and duplicated across LMS accounts, and one platform must not be able to take
    over another's learner by claiming an email. Such merges are an administrator's
    decision (``masteryhub learners link``). Callers pass the email for learners only.
    """
    account = ifi(lti_agent(iss, sub))
    by_account = Learner.objects(agents=account).only("identifier").first()
    if by_account is None:
        learner_id = mapping_identity.IdentityCache().resolve(
            lti_agent(iss, sub) | ({"name": name} if name else {}))
    else:
        learner_id = by_account.identifier
    if email and "@" in email:
        mbox = ifi({"mbox": f"mailto:{email.strip()}"})
        owner = Learner.objects(agents=mbox).only("identifier", "agents").first() \
            if mbox else None
        if mbox is None or (owner is not None and owner.identifier == learner_id):
            return learner_id
        if owner is not None and _has_lms_account(owner.agents):
            log.warning("email of LTI user %s|%s already belongs to learner %s, who has an "
                        "LMS account of their own: not merged (an administrator can run "
                        "`masteryhub learners link`)", iss, sub, owner.identifier)
            return learner_id
        link(learner_id, mbox)
    return learner_id


def _has_lms_account(agents: list[str]) -> bool:
    """True when one of these identifiers is an account on a registered LMS platform."""
    issuers = {p.issuer for p in Platform.objects.only("issuer")}
    return any(a.startswith("acct|") and a.split("|")[1] in issuers for a in agents)


def link(learner_id: str, agent_ifi: str) -> None:
    """Attach an agent identifier; if it was another learner's, merge that learner in
    (its evidence follows)."""
    from mongoengine.connection import get_db

    _, merged = mapping_identity.link(learner_id, agent_ifi)
    if merged:
        mapping_identity.move_evidence(get_db(), merged, learner_id)
