"""The person behind an LTI launch, as a learner of the competency records.

An LTI user (issuer, sub) is the xAPI agent ``account{homePage: iss, name: sub}``; when the
platform shares the email, the ``mbox`` agent is the same person too. Linking both means
evidence posted by an internship platform that only knows the email, and by an online
course that uses LMS accounts, lands in one record.
"""

from __future__ import annotations

from lrs.keys import ifi
from mappings import identity as mapping_identity
from mappings.models import Learner


def lti_agent(iss: str, sub: str) -> dict:
    return {"objectType": "Agent", "account": {"homePage": iss, "name": sub}}


def learner_for_lti_user(iss: str, sub: str, *, email: str | None = None,
                         name: str | None = None) -> str:
    """The learner id for this LTI user, created or linked as needed."""
    account = ifi(lti_agent(iss, sub))
    by_account = Learner.objects(agents=account).only("identifier").first()
    if by_account is None:
        learner_id = mapping_identity.IdentityCache().resolve(
            lti_agent(iss, sub) | ({"name": name} if name else {}))
    else:
        learner_id = by_account.identifier
    if email and "@" in email:
        mbox = ifi({"mbox": f"mailto:{email.strip()}"})
        if mbox is not None:
            link(learner_id, mbox)
    return learner_id


def link(learner_id: str, agent_ifi: str) -> None:
    """Attach an agent identifier; if it was another learner's, merge that learner in
    (its evidence follows)."""
    from mongoengine.connection import get_db

    _, merged = mapping_identity.link(learner_id, agent_ifi)
    if merged:
        mapping_identity.move_evidence(get_db(), merged, learner_id)
