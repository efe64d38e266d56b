"""``GET /xapi/about`` (Part Three §2.8): versions and extensions; no credentials needed."""

from __future__ import annotations

from flask import Blueprint, Response

from lrs.errors import XAPIValidationError
from lrs.web import SUPPORTED_VERSIONS, XRequest, json_response, resource


def register(bp: Blueprint) -> None:
    def about(req: XRequest) -> Response:
        if req.args:
            raise XAPIValidationError(f"/about takes no parameters (got {', '.join(req.args)})")
        return json_response({"version": list(SUPPORTED_VERSIONS),
                              "extensions": {"https://masteryhub.org/xapi/lrs": {
                                  "name": "Mastery Hub LRS"}}})

    resource(bp, "/about", {"GET": about}, public=True)
