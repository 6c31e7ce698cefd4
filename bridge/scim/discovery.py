"""The discovery endpoints' documents (RFC 7644 §4): configuration, resource types, schemas."""

from __future__ import annotations

from typing import Any

from scim2_models import Context

from bridge.config import Settings
from bridge.schemas import Catalog

SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


def service_provider_config(settings: Settings, base_url: str) -> dict[str, Any]:
    return {
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/scim-lms-bridge/scim-lms-bridge#readme",
        "patch": {"supported": True},
        "bulk": {
            "supported": True,
            "maxOperations": settings.max_bulk_operations,
            "maxPayloadSize": settings.max_payload_bytes,
        },
        "filter": {"supported": True, "maxResults": settings.max_page_size},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        # RFC 9865 §3: both paging methods, index by default.
        "pagination": {
            "cursor": True,
            "index": True,
            "defaultPaginationMethod": "index",
            "defaultPageSize": settings.max_page_size,
            "maxPageSize": settings.max_page_size,
        },
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A bearer token made with `bridge tokens create`, or a signed JWT",
                "primary": True,
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base_url}/ServiceProviderConfig",
        },
    }


def resource_types(catalog: Catalog, base_url: str) -> list[dict[str, Any]]:
    out = []
    for resource_type in catalog.resource_types:
        body = resource_type.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        body["meta"] = {
            "resourceType": "ResourceType",
            "location": f"{base_url}/ResourceTypes/{resource_type.id or resource_type.name}",
        }
        out.append(body)
    return out


def schemas(catalog: Catalog, base_url: str) -> list[dict[str, Any]]:
    out = []
    for schema in catalog.schemas:
        body = schema.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        body["meta"] = {"resourceType": "Schema", "location": f"{base_url}/Schemas/{schema.id}"}
        out.append(body)
    return out


def list_response(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_SCHEMA],
        "totalResults": len(resources),
        "startIndex": 1,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
