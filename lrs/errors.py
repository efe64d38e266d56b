"""Errors the LRS raises; each carries the HTTP status it maps to.

The web layer turns any ``XAPIError`` into a response with ``.status`` and ``.message`` so
that the code deciding *that* a request is wrong also decides *how* wrong (xAPI 1.0.3
Part Three §3.2: "An LRS MUST return the error code most appropriate to the error
condition").
"""

from __future__ import annotations


class XAPIError(Exception):
    """Base of every error the LRS reports to a client; 400 unless said otherwise."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class XAPIValidationError(XAPIError):
    """A statement, parameter or document that breaks the xAPI data rules (always 400)."""

    status = 400
