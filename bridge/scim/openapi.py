"""The OpenAPI 3.1 document of the SCIM surface, generated from the schema catalog."""

from __future__ import annotations

from typing import Any

from bridge.config import Settings
from bridge.schemas import Catalog


def document(catalog: Catalog, settings: Settings, base_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``/scim/v2`` as this server serves it."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "SCIM → LMS bridge", "version": "2.0"},
        "servers": [{"url": base_url}],
        "paths": {},
    }
