"""The tool as an xAPI provider: learner submissions become statements in our own LRS.

Why through the LRS and not straight into the evidence collection: a submission is a
learning record like any other — voidable, exportable, visible to the same queries — and
the mapper treats it the same way (see mappings.self_report). The tool posts with
``tincan`` under its own credential, whose secret is derived from SECRET_KEY so nothing
secret is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import uuid
from urllib.parse import quote

import tincan
from flask import Response, current_app
from mongoengine.connection import get_db

from lrs.auth import Credential
from lti_tool.identity import lti_agent
from lti_tool.models import LaunchSession
from mappings import self_report

SUBMITTED = "http://activitystrea.ms/schema/1.0/submit"


class SubmissionError(RuntimeError):
    """The LRS refused or could not be reached; the message is shown to the learner."""


def tool_credential() -> tuple[str, str]:
    """(key, secret) of the tool's own LRS credential, created on first use."""
    settings = current_app.extensions["masteryhub.settings"]
    digest = hmac.new(settings.secret_key.encode(), b"masteryhub tool credential",
                      hashlib.sha256).hexdigest()
    key, secret = self_report.TOOL_CREDENTIAL_PREFIX + digest[:12], digest[12:]
    secret_sha = hashlib.sha256(secret.encode()).hexdigest()
    Credential._get_collection().update_one(
        {"key": key},
        {"$set": {"secret_sha256": secret_sha, "name": "Mastery Hub (learner submissions)",
                  "scopes": ["statements/write", "statements/read/mine"]},
         "$setOnInsert": {"created_at": dt.datetime.now(dt.UTC)}}, upsert=True)
    return key, secret


def submission_statement(session: LaunchSession, *, competency: str, competency_label: str,
                         title: str, reflection: str, link: str | None, level: str | None,
                         source_type: str, file_name: str | None = None) -> tincan.Statement:
    iss, sub = session.user.split("|", 1)
    extensions = {self_report.EXT_COMPETENCY: competency, self_report.EXT_SOURCE: source_type}
    if level:
        extensions[self_report.EXT_LEVEL] = level
    base = current_app.extensions["masteryhub.settings"].base_url
    description = reflection + (f"\n\nLink: {link}" if link else "") + \
        (f"\n\nFile: {file_name}" if file_name else "")
    return tincan.Statement(
        id=str(uuid.uuid4()),
        actor=tincan.Agent(name=session.name or None,
                           account=tincan.AgentAccount(**lti_agent(iss, sub)["account"])),
        verb=tincan.Verb(id=SUBMITTED, display=tincan.LanguageMap({"en-US": "submitted"})),
        object=tincan.Activity(
            id=f"{base}/evidence/{uuid.uuid4()}",
            definition=tincan.ActivityDefinition(
                name=tincan.LanguageMap({"en-US": title[:200]}),
                description=tincan.LanguageMap({"en-US": description[:4000]}),
                type="http://id.tincanapi.com/activitytype/reflection",
                more_info=link or None)),
        context=tincan.Context(
            context_activities=tincan.ContextActivities(
                category=[tincan.Activity(id=self_report.CATEGORY)]),
            extensions=tincan.Extensions(extensions),
            platform="Mastery Hub", language="en-US"),
        timestamp=dt.datetime.now(dt.UTC))


def submit(statement: tincan.Statement) -> str:
    """Store through the LRS's HTTP API; returns the statement id."""
    key, secret = tool_credential()
    base = current_app.extensions["masteryhub.settings"].base_url
    lrs = tincan.RemoteLRS(endpoint=base + "/xapi/", username=key, password=secret,
                           version="1.0.3")
    try:
        response = lrs.save_statement(statement)
    except Exception as exc:  # network errors surface as assorted exceptions in tincan
        raise SubmissionError(f"the learning record store could not be reached: {exc}") \
            from exc
    if not response.success:
        raise SubmissionError(f"the learning record store refused the submission "
                              f"({response.response.status}): {response.data}")
    return str(statement.id)


def attach_file(statement: tincan.Statement, *, learner: str, course: str | None, name: str,
                data: bytes, content_type: str | None) -> str:
    """Keep a submitted file in the tool and reference it from the statement as an xAPI
    attachment by ``fileUrl`` (tincan cannot send attachment content; the file stays
    behind the tool's access checks)."""
    file_id = uuid.uuid4().hex
    sha2 = hashlib.sha256(data).hexdigest()
    content_type = content_type or "application/octet-stream"
    get_db()["lti_files"].insert_one({
        "_id": file_id, "learner": learner, "course": course, "name": name[:200],
        "content_type": content_type, "size": len(data), "sha256": sha2, "data": data,
        "statement": str(statement.id), "created_at": dt.datetime.now(dt.UTC)})
    base = current_app.extensions["masteryhub.settings"].base_url
    statement.attachments = [tincan.Attachment(
        usage_type="http://id.tincanapi.com/attachment/supporting_media",
        display=tincan.LanguageMap({"en-US": name[:200]}), content_type=content_type,
        length=len(data), sha2=sha2, fileurl=f"{base}/lti/files/{file_id}")]
    return file_id


def stored_file(file_id: str) -> dict | None:
    if not file_id or len(file_id) != 32:
        return None
    return get_db()["lti_files"].find_one({"_id": file_id})


def file_response(stored: dict) -> Response:
    response = Response(stored["data"], content_type=stored["content_type"])
    response.headers["Content-Disposition"] = \
        f"attachment; filename*=UTF-8''{quote(stored['name'])}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
