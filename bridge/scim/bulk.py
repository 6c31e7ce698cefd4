"""``POST /Bulk`` (RFC 7644 §3.7): operations in one transaction, a savepoint each.

An operation that fails rolls back its own savepoint only; ``failOnErrors`` stops the run
after that many errors. ``bulkId:`` references in paths and data resolve to the ids the
same request created; an operation whose reference is not yet known waits for a later pass.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from typing import Any

from scim2_models import InvalidSyntaxException
from scim2_models import InvalidValueException
from scim2_models import PayloadTooLargeException
from scim2_models import SCIMException

from bridge.scim.errors import error_body
from bridge.scim.quirks import normalize_patch
from bridge.scim.quirks import normalize_resource
from bridge.scim.render import resource_json

if TYPE_CHECKING:
    from bridge.scim.app import Call
    from bridge.scim.app import ScimServer

BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
_REFERENCE = re.compile(r"bulkId:([A-Za-z0-9._~-]+)")
_PATH = re.compile(r"^/(?i:(users|groups))(?:/([^/]+))?$")


class _Unresolved(Exception):
    def __init__(self, bulk_id: str) -> None:
        super().__init__(bulk_id)
        self.bulk_id = bulk_id


def _resolve(value: Any, created: dict[str, str]) -> Any:
    text = json.dumps(value)

    def swap(match: re.Match[str]) -> str:
        found = created.get(match.group(1))
        if found is None:
            raise _Unresolved(match.group(1))
        return found

    return json.loads(_REFERENCE.sub(swap, text))


def _check(body: Any, max_operations: int) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise InvalidSyntaxException(detail="a BulkRequest must be a JSON object")
    operations = body.get("Operations")
    if not isinstance(operations, list):
        raise InvalidSyntaxException(detail="'Operations' must be a list")
    if len(operations) > max_operations:
        raise PayloadTooLargeException(
            detail=f"{len(operations)} operations; the maximum is {max_operations}"
        )
    for operation in operations:
        if not isinstance(operation, dict):
            raise InvalidSyntaxException(detail="each bulk operation must be a JSON object")
    return operations


def run_bulk(server: ScimServer, call: Call, body: Any) -> dict[str, Any]:
    """Run a BulkRequest; the BulkResponse body."""
    operations = _check(body, server.settings.max_bulk_operations)
    fail_on_errors = body.get("failOnErrors")
    if fail_on_errors is not None and (not isinstance(fail_on_errors, int) or fail_on_errors < 0):
        raise InvalidValueException(detail="failOnErrors must be a non-negative integer")
    created: dict[str, str] = {}
    results: dict[int, dict[str, Any]] = {}
    errors = 0
    pending = list(range(len(operations)))
    with server.provisioner.transaction() as conn:
        while pending:
            waiting = []
            for index in pending:
                if fail_on_errors and errors >= fail_on_errors:
                    break
                operation = operations[index]
                try:
                    results[index] = _run_one(server, call, conn, operation, created)
                except _Unresolved as exc:
                    waiting.append(index)
                    results[index] = _failure(
                        operation,
                        409,
                        f"bulkId {exc.bulk_id!r} is not created by this request",
                        "invalidValue",
                    )
                    continue
                except SCIMException as exc:
                    results[index] = _failure(
                        operation, exc.status, exc.detail, exc.scim_type or None
                    )
                if int(results[index]["status"]) >= 400:
                    errors += 1
            if len(waiting) == len(pending) or (fail_on_errors and errors >= fail_on_errors):
                errors += len(waiting)
                break
            pending = waiting
    return {
        "schemas": [BULK_RESPONSE],
        "Operations": [results[i] for i in sorted(results)],
    }


def _failure(
    operation: dict[str, Any], status: int, detail: str, scim_type: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {k: operation[k] for k in ("method", "bulkId") if k in operation}
    out["status"] = str(status)
    out["response"] = error_body(status, detail, scim_type)
    return out


def _run_one(
    server: ScimServer, call: Call, conn: Any, operation: dict[str, Any], created: dict[str, str]
) -> dict[str, Any]:
    method = str(operation.get("method", "")).upper()
    path = _resolve(operation.get("path", ""), created)
    match = _PATH.match(path) if isinstance(path, str) else None
    if match is None:
        raise InvalidValueException(detail=f"bulk path {path!r} is not /Users[/id] or /Groups[/id]")
    resource_type = "User" if match.group(1).lower() == "users" else "Group"
    resource_id = match.group(2)
    data = _resolve(operation.get("data"), created) if "data" in operation else None
    version = operation.get("version")
    provisioner = server.provisioner
    model = server.catalog.model(resource_type)
    out: dict[str, Any] = {"method": method}
    if "bulkId" in operation:
        out["bulkId"] = operation["bulkId"]
    if method == "POST" and resource_id is None:
        payload, tolerances = normalize_resource(data, model, server.known_schemas[resource_type])
        outcome = provisioner.create(
            call.cause, resource_type, payload, tolerances + ["bulk"], conn=conn
        )
        if "bulkId" in operation:
            created[str(operation["bulkId"])] = outcome.record.id
        status = 201
    elif method == "PUT" and resource_id:
        payload, tolerances = normalize_resource(data, model, server.known_schemas[resource_type])
        outcome = provisioner.replace(
            call.cause,
            resource_type,
            resource_id,
            payload,
            if_match=version,
            tolerances=tolerances + ["bulk"],
            conn=conn,
        )
        status = 200
    elif method == "PATCH" and resource_id:
        ops, tolerances = normalize_patch(data, model)
        outcome = provisioner.patch(
            call.cause,
            resource_type,
            resource_id,
            ops,
            if_match=version,
            tolerances=tolerances + ["bulk"],
            conn=conn,
        )
        status = 200
    elif method == "DELETE" and resource_id:
        provisioner.delete(call.cause, resource_type, resource_id, if_match=version, conn=conn)
        out["status"] = "204"
        return out
    else:
        raise InvalidValueException(detail=f"{method} {path} is not a bulk operation")
    meta = resource_json(outcome.record, call.base_url)["meta"]
    out["location"] = meta["location"]
    out["version"] = outcome.record.etag
    out["status"] = str(status)
    return out
