"""``GET /xapi/about`` (Part Three §2.8): versions and extensions; no credentials needed."""

from __future__ import annotations

from flask import Blueprint, Response

from lrs.web import SUPPORTED_VERSIONS, XRequest, json_response, resource


def register(bp: Blueprint) -> None:
    def about(req: XRequest) -> Response:
        return json_response({"version": list(SUPPORTED_VERSIONS),
                              "extensions": {"https://masteryhub.org/xapi/lrs": {
                                  "name": "Mastery Hub LRS"}}})

    resource(bp, "/about", {"GET": about}, public=True)
