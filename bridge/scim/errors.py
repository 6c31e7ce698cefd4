"""SCIM Error responses (RFC 7644 §3.12), rendered in one place."""

from __future__ import annotations

import json
from typing import Any

from scim2_models import SCIMException
from starlette.responses import Response

SCIM_MEDIA_TYPE = "application/scim+json"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


class ScimResponse(Response):
    media_type = SCIM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_body(status: int, detail: str, scim_type: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status)}
    if scim_type:
        body["scimType"] = scim_type
    body["detail"] = detail
    return body


def error_response(
    status: int, detail: str, scim_type: str | None = None, headers: dict[str, str] | None = None
) -> ScimResponse:
    return ScimResponse(error_body(status, detail, scim_type), status_code=status, headers=headers)


def from_exception(exc: SCIMException) -> ScimResponse:
    headers = None
    if exc.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="scim"'}
    return error_response(
        exc.status, exc.detail or type(exc).__name__, exc.scim_type or None, headers
    )
