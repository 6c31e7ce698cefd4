"""The OpenAPI 3.1 document of the SCIM surface (RFC 7644 §3), generated from the schema catalog.

Attribute definitions (RFC 7643 §7) become JSON Schema 2020-12 and the settings' limits become
maximums, so the document follows the schema files and the configuration. Hand-written:
scim2-models builds pydantic models from schemas, and no well-kept library maps SCIM to OpenAPI.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from scim2_models import Attribute
from scim2_models import BulkRequest
from scim2_models import BulkResponse
from scim2_models import CaseExact
from scim2_models import Error
from scim2_models import ListResponse
from scim2_models import Mutability
from scim2_models import PatchOp
from scim2_models import ResourceType
from scim2_models import Returned
from scim2_models import SearchRequest
from scim2_models import ServiceProviderConfig
from scim2_models import Uniqueness

from bridge import __version__
from bridge.auth.tokens import READ
from bridge.auth.tokens import WRITE
from bridge.config import Settings
from bridge.schemas import Catalog
from bridge.scim.door import MAX_INDEX
from bridge.scim.door import MAX_LENGTHS
from bridge.scim.errors import SCIM_MEDIA_TYPE

JSON = dict[str, Any]
SCHEMAS = "#/components/schemas/"
SERVED = ("User", "Group")
"""The resource types app.py serves (its ``ENDPOINTS``; app.py imports this module)."""

SCIM_TYPES = (
    # RFC 7644 §3.12
    *("invalidFilter", "tooMany", "uniqueness", "mutability", "invalidSyntax", "invalidPath"),
    *("noTarget", "invalidValue", "invalidVers", "sensitive"),
    # RFC 9865 §2 (cursor paging)
    *("invalidCursor", "expiredCursor", "invalidCount"),
)

_TYPES: dict[Attribute.Type, JSON] = {
    Attribute.Type.string: {"type": "string"},
    Attribute.Type.boolean: {"type": "boolean"},
    Attribute.Type.decimal: {"type": "number"},
    Attribute.Type.integer: {"type": "integer"},
    Attribute.Type.date_time: {"type": "string", "format": "date-time"},
    Attribute.Type.reference: {"type": "string", "format": "uri-reference"},
    Attribute.Type.binary: {"type": "string", "contentEncoding": "base64"},
    Attribute.Type.complex: {"type": "object"},
}
_STRING: JSON = {"type": "string"}

# The error statuses the server answers: component name, description, extra headers.
_ERRORS: dict[int, tuple[str, str, tuple[str, ...]]] = {
    400: ("BadRequest", "The request is malformed or refused (see scimType).", ()),
    401: ("Unauthorized", "No bearer token, or not a valid one.", ("WWW-Authenticate",)),
    403: ("Forbidden", "The token lacks the scope the operation needs.", ()),
    404: ("NotFound", "No such resource.", ()),
    409: ("Conflict", "A unique attribute's value is taken (scimType uniqueness).", ()),
    412: ("PreconditionFailed", "If-Match names another version of the resource.", ()),
    413: ("PayloadTooLarge", "The body, or the number of bulk operations, is too large.", ()),
    500: ("InternalError", "An unexpected error; the server log has the request id.", ()),
    501: ("NotImplemented", "The endpoint is not supported.", ()),
    503: ("Unavailable", "The database is busy; retry after a second.", ("Retry-After",)),
}
_ALWAYS = (401, 403, 500, 503)
_HEADERS = {
    "X-Request-Id": "The request's correlation id (the client's X-Request-Id, or a new one).",
    "ETag": "The version of the resource (RFC 7644 §3.14).",
    "Location": "The URI of the created resource.",
    "WWW-Authenticate": 'Bearer realm="scim".',
    "Retry-After": "Seconds to wait before retrying.",
}


def document(catalog: Catalog, settings: Settings, base_url: str) -> JSON:
    """The OpenAPI 3.1 document describing ``/scim/v2`` as this server serves it."""
    served = [rt for name in SERVED for rt in catalog.resource_types if rt.name == name]
    names = _extension_names(catalog, served)
    schemas = {str(rt.name): _resource(catalog, rt, names, settings) for rt in served}
    for urn, name in names.items():
        found = catalog.schema(urn)
        schemas[name] = _object((found.attributes or []) if found else [], settings)
        schemas[name]["description"] = _text(found.description if found else None) or urn
    schemas.update(_messages(served, settings))
    limits = (
        f"Bodies of at most {settings.max_payload_bytes} bytes; pages of at most "
        f"{settings.max_page_size} resources; at most {settings.max_bulk_operations} bulk "
        f"operations; filters of at most {settings.max_filter_length} characters and "
        f"{settings.max_filter_terms} terms; strings of at most {settings.max_string_length} "
        "characters unless their attribute says less."
    )
    scheme = "A token made with `bridge tokens create`, or a signed JWT; each operation names"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SCIM → LMS bridge",
            "version": __version__,
            "description": f"SCIM 2.0 (RFC 7643, RFC 7644) provisioning. {limits}",
        },
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "paths": {**_resource_paths(served), **_service_paths()},
        "components": {
            "schemas": schemas,
            "parameters": _parameters(settings),
            "responses": {name: _ok(text, "Error", *more) for name, text, more in _ERRORS.values()},
            "headers": {
                name: {"schema": _STRING, "description": text} for name, text in _HEADERS.items()
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"{scheme} the scope it needs: {READ} or {WRITE}.",
                }
            },
        },
    }


# -- schemas: SCIM attribute definitions (RFC 7643 §2, §7) as JSON Schema ---------------------


def _text(description: str | None) -> str:
    return " ".join((description or "").split())


def _attribute(attribute: Attribute, settings: Settings) -> JSON:
    kind = attribute.type or Attribute.Type.string
    value: JSON = dict(_TYPES[kind])
    if kind is Attribute.Type.complex:
        value.update(_object(attribute.sub_attributes or [], settings))
    elif kind in (Attribute.Type.string, Attribute.Type.reference):
        name = (attribute.name or "").lower()
        value["maxLength"] = MAX_LENGTHS.get(name, settings.max_string_length)
    if attribute.canonical_values:
        # Examples, not an enum: RFC 7643 §7 lets a client send other values.
        value["examples"] = list(attribute.canonical_values)
    if attribute.multi_valued:
        value = {"type": "array", "items": value}
    notes = [_text(attribute.description)]
    if attribute.mutability is Mutability.immutable:
        notes.append("Immutable: set once, never changed.")
    if attribute.uniqueness is not Uniqueness.none:
        notes.append(f"Unique ({attribute.uniqueness.value}).")
    if attribute.returned is Returned.always:
        notes.append("Always returned.")
    if attribute.reference_types and kind is Attribute.Type.reference:
        notes.append(f"References: {', '.join(attribute.reference_types)}.")
    if any(notes):
        value["description"] = " ".join(note for note in notes if note)
    if attribute.mutability is Mutability.read_only:
        value["readOnly"] = True
    if attribute.mutability is Mutability.write_only or attribute.returned is Returned.never:
        value["writeOnly"] = True
    return value


def _object(attributes: Iterable[Attribute], settings: Settings) -> JSON:
    named = [attribute for attribute in attributes if attribute.name]
    out: JSON = {
        "type": "object",
        "properties": {str(a.name): _attribute(a, settings) for a in named},
    }
    if required := [str(a.name) for a in named if a.required]:
        out["required"] = required
    return out


def _common_attributes() -> list[Attribute]:
    """RFC 7643 §3.1: the attributes of every resource, which schema files leave out (§7)."""
    string, read_only = Attribute.Type.string, Mutability.read_only

    def meta(name: str, kind: Attribute.Type, description: str) -> Attribute:
        return Attribute(name=name, type=kind, mutability=read_only, description=description)

    return [
        Attribute(
            name="id",
            type=string,
            mutability=read_only,
            returned=Returned.always,
            uniqueness=Uniqueness.global_,
            case_exact=CaseExact.true,
            description="The service provider's identifier of the resource.",
        ),
        Attribute(
            name="externalId",
            type=string,
            case_exact=CaseExact.true,
            description="The provisioning client's identifier of the resource.",
        ),
        Attribute(
            name="meta",
            type=Attribute.Type.complex,
            mutability=read_only,
            description="Resource metadata.",
            sub_attributes=[
                meta("resourceType", string, "The resource type's name."),
                meta("created", Attribute.Type.date_time, "When the resource was created."),
                meta("lastModified", Attribute.Type.date_time, "When it last changed."),
                meta("location", Attribute.Type.reference, "The resource's URI."),
                meta("version", string, "The resource's version, as its ETag header."),
            ],
        ),
    ]


def _extension_names(catalog: Catalog, served: list[ResourceType]) -> dict[str, str]:
    """A component name for each extension schema of the served types, keyed by URN."""
    taken = {str(rt.name) for rt in served} | {f"{rt.name}ListResponse" for rt in served}
    taken |= set(_MESSAGES)
    names: dict[str, str] = {}
    for urn in (str(ext.schema_) for rt in served for ext in rt.schema_extensions or []):
        if urn in names:
            continue
        found = catalog.schema(urn)
        name = re.sub(r"[^A-Za-z0-9._-]", "", (found.name if found else None) or "")
        if not name or name in taken:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", urn)
        names[urn] = name
        taken.add(name)
    return names


def _urns(*urns: str, response: bool = False) -> JSON:
    """The ``schemas`` attribute; a response's holds the first of ``urns``."""
    out: JSON = {"type": "array", "items": _STRING, "examples": [list(urns[:1])]}
    out["description"] = "The URNs of the schemas the body follows: " + ", ".join(urns) + "."
    if response:
        out["contains"] = {"const": urns[0]}
    return out


def _resource(
    catalog: Catalog, resource_type: ResourceType, names: dict[str, str], settings: Settings
) -> JSON:
    core_urn = str(resource_type.schema_)
    core = catalog.schema(core_urn)
    out = _object([*_common_attributes(), *((core.attributes or []) if core else [])], settings)
    extensions = resource_type.schema_extensions or []
    urns = [str(extension.schema_) for extension in extensions]
    out["properties"] = {"schemas": _urns(core_urn, *urns), **out["properties"]}
    out["properties"].update({urn: {"$ref": SCHEMAS + names[urn]} for urn in urns})
    out["required"] = [
        "schemas",
        *out.get("required", []),
        *(str(extension.schema_) for extension in extensions if extension.required),
    ]
    out["description"] = (
        f"{_text(resource_type.description) or resource_type.name} ({core_urn}). A response "
        "to a request with attributes or excludedAttributes holds only the selected "
        "attributes, id and schemas (RFC 7644 §3.4.2.5)."
    )
    return out


def _obj(*required: str, **properties: JSON) -> JSON:
    return {"type": "object", "required": list(required), "properties": properties}


def _list(items: JSON, what: str) -> JSON:
    """A ListResponse (RFC 7644 §3.4.2) of ``items``; nextCursor from RFC 9865."""
    return {
        **_obj(
            "schemas",
            "totalResults",
            "itemsPerPage",
            "Resources",
            schemas=_urns(str(ListResponse.__schema__), response=True),
            totalResults={"type": "integer", "minimum": 0},
            itemsPerPage={"type": "integer", "minimum": 0},
            startIndex={"type": "integer", "minimum": 1, "description": "Index paging."},
            nextCursor={**_STRING, "description": "Cursor paging (RFC 9865)."},
            Resources={"type": "array", "items": items},
        ),
        "description": f"A page of {what}.",
    }


_MESSAGES = (
    *("ListResponse", "SearchRequest", "PatchOp", "BulkRequest", "BulkResponse", "Error"),
    *("ServiceProviderConfig", "ResourceType", "ResourceTypeListResponse"),
    *("Schema", "SchemaListResponse"),
)


def _messages(served: list[ResourceType], settings: Settings) -> JSON:
    """The messages of RFC 7644 §3, and the discovery resources loosely (RFC 7643 §5–§7)."""
    loose: JSON = {"type": "object", "additionalProperties": True}
    status = {**_STRING, "pattern": "^[1-5][0-9][0-9]$", "description": "An HTTP status."}
    out = {f"{rt.name}ListResponse": _list(_ref(str(rt.name)), f"{rt.name}s") for rt in served}
    out["ListResponse"] = _list({"anyOf": [_ref(str(rt.name)) for rt in served]}, "resources")
    out["SearchRequest"] = _obj(
        "schemas",
        schemas=_urns(str(SearchRequest.__schema__)),
        attributes={"type": "array", "items": _STRING},
        excludedAttributes={"type": "array", "items": _STRING},
        filter=_filter(settings),
        sortBy=_STRING,
        sortOrder=_SORT_ORDER,
        startIndex=_START_INDEX,
        count=_count(settings),
        cursor=_CURSOR,
    )
    operation = _obj("op", op={"enum": ["add", "remove", "replace"]}, path=_STRING, value={})
    out["PatchOp"] = _obj(
        "schemas",
        "Operations",
        schemas=_urns(str(PatchOp.__schema__)),
        Operations={"type": "array", "minItems": 1, "items": operation},
    )
    operation = _obj(
        "method",
        "path",
        method={"enum": ["POST", "PUT", "PATCH", "DELETE"]},
        bulkId=_STRING,
        version=_STRING,
        path={**_STRING, "examples": ["/Users", "/Groups/bulkId:g1"]},
        data={"type": "object"},
    )
    out["BulkRequest"] = _obj(
        "schemas",
        "Operations",
        schemas=_urns(str(BulkRequest.__schema__)),
        failOnErrors={"type": "integer", "minimum": 0},
        Operations={"type": "array", "maxItems": settings.max_bulk_operations, "items": operation},
    )
    out["BulkRequest"]["description"] = (
        "Operations in one transaction, a savepoint each (RFC 7644 §3.7); a bulkId:… "
        "reference resolves to the id an operation of the same request created."
    )
    result = _obj(
        "status",
        method=_STRING,
        bulkId=_STRING,
        version=_STRING,
        location={**_STRING, "format": "uri"},
        status=status,
        response=_ref("Error"),
    )
    out["BulkResponse"] = _obj(
        "schemas",
        "Operations",
        schemas=_urns(str(BulkResponse.__schema__), response=True),
        Operations={"type": "array", "items": result},
    )
    out["Error"] = _obj(
        "schemas",
        "status",
        schemas=_urns(str(Error.__schema__), response=True),
        status=status,
        scimType={"enum": list(SCIM_TYPES)},
        detail=_STRING,
    )
    spc = _urns(str(ServiceProviderConfig.__schema__), response=True)
    out["ServiceProviderConfig"] = {**_obj("schemas", schemas=spc), **loose}
    rt_urns = _urns(str(ResourceType.__schema__), response=True)
    out["ResourceType"] = {
        **_obj("schemas", "name", "endpoint", "schema", schemas=rt_urns),
        **loose,
    }
    attributes = {"type": "array", "items": loose}
    out["Schema"] = {**_obj("id", "attributes", id=_STRING, attributes=attributes), **loose}
    out["ResourceTypeListResponse"] = _list(_ref("ResourceType"), "resource types")
    out["SchemaListResponse"] = _list(_ref("Schema"), "schemas")
    return out


def _ref(name: str) -> JSON:
    return {"$ref": SCHEMAS + name}


_SORT_ORDER: JSON = {"enum": ["ascending", "descending"], "default": "ascending"}
_START_INDEX: JSON = {"type": "integer", "minimum": 1, "maximum": MAX_INDEX, "default": 1}
_CURSOR: JSON = {
    **_STRING,
    "description": "Cursor paging (RFC 9865): empty for the first page, then the previous "
    "page's nextCursor. Not with startIndex.",
}


def _filter(settings: Settings) -> JSON:
    return {
        **_STRING,
        "maxLength": settings.max_filter_length,
        "description": f"A filter (RFC 7644 §3.4.2.2) of at most {settings.max_filter_terms} terms.",
        "examples": ['userName eq "bjensen"'],
    }


def _count(settings: Settings) -> JSON:
    limit = settings.max_page_size
    description = f"Resources per page (§3.4.2.4); a larger count is served as {limit}."
    return {"type": "integer", "minimum": 0, "maximum": limit, "description": description}


# -- parameters, responses, operations -------------------------------------------------------


def _parameters(settings: Settings) -> JSON:
    def parameter(name: str, where: str, schema: JSON, description: str) -> JSON:
        out = {"name": name, "in": where, "schema": schema, "description": description}
        return {**out, "required": True} if where == "path" else out

    names = {**_STRING, "examples": ["userName,name.givenName"]}
    return {
        "filter": parameter("filter", "query", _filter(settings), "Only matching resources."),
        "sortBy": parameter("sortBy", "query", _STRING, "The attribute to sort by (§3.4.2.3)."),
        "sortOrder": parameter("sortOrder", "query", _SORT_ORDER, "The order of sortBy."),
        "startIndex": parameter("startIndex", "query", _START_INDEX, "1-based first result."),
        "count": parameter("count", "query", _count(settings), "The page size."),
        "cursor": parameter("cursor", "query", _CURSOR, "The page to read (RFC 9865)."),
        "attributes": parameter("attributes", "query", names, "Only these (§3.4.2.5)."),
        "excludedAttributes": parameter(
            "excludedAttributes", "query", names, "All but these (§3.4.2.5)."
        ),
        "If-Match": parameter("If-Match", "header", _STRING, "Only this version (ETag); else 412."),
        "If-None-Match": parameter("If-None-Match", "header", _STRING, "304 if still this ETag."),
        "X-Request-Id": parameter("X-Request-Id", "header", _STRING, "A correlation id."),
        "id": parameter("id", "path", _STRING, "The resource's id."),
        "name": parameter("name", "path", _STRING, "The resource type's name."),
        "schemaId": parameter("id", "path", _STRING, "The schema's URN."),
    }


def _headers(*names: str) -> JSON:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in ("X-Request-Id", *names)}


def _ok(description: str, schema: str | None, *headers: str) -> JSON:
    out: JSON = {"description": description, "headers": _headers(*headers)}
    if schema is not None:
        out["content"] = {SCIM_MEDIA_TYPE: {"schema": _ref(schema)}}
    return out


def _operation(
    tag: str,
    operation_id: str,
    scope: str,
    responses: JSON,
    errors: tuple[int, ...] = (),
    parameters: tuple[str, ...] = (),
    body: str | None = None,
) -> JSON:
    out: JSON = {
        "operationId": operation_id,
        "tags": [tag],
        "security": [{"bearer": [scope]}],
        "parameters": [
            {"$ref": f"#/components/parameters/{name}"} for name in (*parameters, "X-Request-Id")
        ],
    }
    if body is not None:
        content = {"schema": _ref(body)}
        media = {SCIM_MEDIA_TYPE: content, "application/json": content}
        out["requestBody"] = {"required": True, "content": media}
    out["responses"] = {**responses}
    for status in sorted({*errors, *_ALWAYS}):
        out["responses"][str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
    return out


_QUERY = ("filter", "sortBy", "sortOrder", "startIndex", "count", "cursor")
_SELECT = ("attributes", "excludedAttributes")
_WRITES = (400, 404, 409, 412, 413)


def _resource_paths(served: list[ResourceType]) -> JSON:
    """RFC 7644 §3.3–§3.6 at each served resource type's endpoint."""
    paths: JSON = {}
    for resource_type in served:
        name, endpoint = str(resource_type.name), str(resource_type.endpoint)
        tag = endpoint.strip("/")
        listed = {"200": _ok(f"A page of {tag}.", f"{name}ListResponse")}
        one = {"200": _ok(f"The {name}.", name, "ETag")}
        created = {"201": _ok(f"The created {name}.", name, "ETag", "Location")}
        unchanged = {"304": _ok("Not modified.", None, "ETag")}
        patched = dict(one)
        if name == "Group":
            # app.py answers a Group PATCH with 204 unless attributes are asked for: a member
            # list can be 100k long (RFC 7644 §3.5.2 allows it; Okta and Entra accept it).
            patched["204"] = _ok("Changed; ask with attributes for a body.", None, "ETag")
        paths[endpoint] = {
            "get": _operation(tag, f"list{tag}", READ, listed, (400,), (*_QUERY, *_SELECT)),
            "post": _operation(tag, f"create{name}", WRITE, created, _WRITES, _SELECT, name),
        }
        search = _operation(tag, f"search{tag}", READ, listed, (400, 413), (), "SearchRequest")
        paths[f"{endpoint}/.search"] = {"post": search}
        guarded = (*_SELECT, "If-Match")
        paths[f"{endpoint}/{{id}}"] = {
            "parameters": [{"$ref": "#/components/parameters/id"}],
            "get": _operation(
                tag,
                f"get{name}",
                READ,
                {**one, **unchanged},
                (400, 404),
                (*_SELECT, "If-None-Match"),
            ),
            "put": _operation(tag, f"replace{name}", WRITE, one, _WRITES, guarded, name),
            "patch": _operation(tag, f"patch{name}", WRITE, patched, _WRITES, guarded, "PatchOp"),
            "delete": _operation(
                tag,
                f"delete{name}",
                WRITE,
                {"204": _ok("Deleted.", None)},
                (400, 404, 412),
                ("If-Match",),
            ),
        }
    return paths


def _service_paths() -> JSON:
    """Search across types, Bulk, discovery (RFC 7644 §4), /Me and this document."""

    def get(operation_id: str, schema: str, parameter: str | None = None) -> JSON:
        ok = {"200": _ok(f"The {schema.removesuffix('ListResponse')}.", schema)}
        operation = _operation("Discovery", operation_id, READ, ok, (404,) if parameter else ())
        if parameter is None:
            return {"get": operation}
        return {"parameters": [{"$ref": f"#/components/parameters/{parameter}"}], "get": operation}

    everything = {"200": _ok("A page of resources.", "ListResponse")}
    outcomes = {"200": _ok("The outcome of each operation.", "BulkResponse")}
    me = _operation("Me", "me", READ, {}, (501,))
    me["description"] = "Not supported: tokens name clients, not users."
    this = _ok("This OpenAPI 3.1 document.", None)
    this["content"] = {"application/json": {"schema": {"type": "object"}}}
    return {
        "/.search": {
            "post": _operation(
                "Search", "search", READ, everything, (400, 413), (), "SearchRequest"
            )
        },
        "/Bulk": {
            "post": _operation("Bulk", "bulk", WRITE, outcomes, (400, 413), (), "BulkRequest")
        },
        "/ServiceProviderConfig": get("getServiceProviderConfig", "ServiceProviderConfig"),
        "/ResourceTypes": get("getResourceTypes", "ResourceTypeListResponse"),
        "/ResourceTypes/{name}": get("getResourceType", "ResourceType", "name"),
        "/Schemas": get("getSchemas", "SchemaListResponse"),
        "/Schemas/{id}": get("getSchema", "Schema", "schemaId"),
        "/Me": {
            method: {**me, "operationId": f"{method}Me"}
            for method in ("get", "post", "put", "patch", "delete")
        },
        "/openapi.json": {"get": _operation("Discovery", "getOpenApi", READ, {"200": this})},
    }
