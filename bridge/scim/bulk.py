"""``POST /Bulk`` (RFC 7644 §3.7): operations in one transaction, a savepoint each.

Every ``bulkId`` is checked before anything runs: one that is not a non-empty string of the
characters a ``bulkId:`` reference can name, or that two operations share, makes the whole
request 400 ``invalidValue``, since references to it would be ambiguous. An operation without
one is accepted, a POST included.

Operations run in request order, except that one waits for the operations whose bulkIds its
path or data reference (§3.7.2): one pass in dependency order. A reference that nothing in
the request creates, or one that waits on a circular reference (§3.7.1), is that operation's
409 ``invalidValue``. A failed operation rolls back its own savepoint only: a SCIM error is its
answer, any other failure its 500, logged. Every error counts towards ``failOnErrors``, which
stops the run after that many (§3.7.3). The BulkResponse lists operations in request order.
"""

from __future__ import annotations

import heapq
import json
import logging
import re
from dataclasses import dataclass
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

log = logging.getLogger("bridge.scim")

BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
_BULK_ID = re.compile(r"[A-Za-z0-9._~-]+")
_REFERENCE = re.compile(rf"bulkId:({_BULK_ID.pattern})")
_PATH = re.compile(r"^/(?i:(users|groups))(?:/([^/]+))?$")


@dataclass
class _Operation:
    """One operation of the request: its path and data as JSON, and the bulkIds they name."""

    index: int
    request: dict[str, Any]
    bulk_id: str | None
    text: str
    references: list[str]


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


def _operations(requests: list[dict[str, Any]]) -> list[_Operation]:
    """The operations with their bulkIds, each one unique and nameable by a reference."""
    seen: set[str] = set()
    operations = []
    for index, request in enumerate(requests):
        bulk_id = request.get("bulkId")
        if bulk_id is not None:
            if not isinstance(bulk_id, str) or not _BULK_ID.fullmatch(bulk_id):
                raise InvalidValueException(
                    detail=f"Operations[{index}].bulkId must be a non-empty string of "
                    "letters, digits and '.', '_', '~', '-'"
                )
            if bulk_id in seen:
                raise InvalidValueException(
                    detail=f"Operations[{index}].bulkId {bulk_id!r} is not unique"
                )
            seen.add(bulk_id)
        text = json.dumps([request.get("path", ""), request.get("data")])
        references = list(dict.fromkeys(_REFERENCE.findall(text)))
        operations.append(_Operation(index, request, bulk_id, text, references))
    return operations


def dependency_order(
    bulk_ids: list[str | None], references: list[list[str]]
) -> tuple[list[int], list[int]]:
    """Operation indexes in request order, except that an operation comes after those whose
    bulkIds it references; then those that wait on a circular reference, in request order."""
    creator = {bulk_id: i for i, bulk_id in enumerate(bulk_ids) if bulk_id is not None}
    waiting = [0] * len(bulk_ids)
    dependents: list[list[int]] = [[] for _ in bulk_ids]
    for i, named in enumerate(references):
        for bulk_id in set(named):
            if bulk_id in creator:
                waiting[i] += 1
                dependents[creator[bulk_id]].append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    return order, [i for i, count in enumerate(waiting) if count]


def run_bulk(server: ScimServer, call: Call, body: Any) -> dict[str, Any]:
    """Run a BulkRequest; the BulkResponse body."""
    operations = _operations(_check(body, server.settings.max_bulk_operations))
    fail_on_errors = body.get("failOnErrors")
    if fail_on_errors is not None and (
        isinstance(fail_on_errors, bool)
        or not isinstance(fail_on_errors, int)
        or fail_on_errors < 0
    ):
        raise InvalidValueException(detail="failOnErrors must be a non-negative integer")
    order, circular = dependency_order(
        [op.bulk_id for op in operations], [op.references for op in operations]
    )
    waits = {operations[i].bulk_id for i in circular}
    created: dict[str, str] = {}
    results: dict[int, dict[str, Any]] = {}
    errors = 0
    with server.provisioner.transaction() as conn:
        for index in order + circular:
            if fail_on_errors and errors >= fail_on_errors:
                break
            operation = operations[index]
            missing = next((b for b in operation.references if b not in created), None)
            if missing is None:
                results[index] = _answer(server, call, conn, operation, created)
            elif missing in waits:
                detail = f"bulkId {missing!r} waits on a circular reference (RFC 7644 §3.7.1)"
                results[index] = _failure(operation, 409, detail, "invalidValue")
            else:
                detail = f"bulkId {missing!r} is not created by this request"
                results[index] = _failure(operation, 409, detail, "invalidValue")
            if int(results[index]["status"]) >= 400:
                errors += 1
    return {
        "schemas": [BULK_RESPONSE],
        "Operations": [results[i] for i in sorted(results)],
    }


def _answer(
    server: ScimServer, call: Call, conn: Any, operation: _Operation, created: dict[str, str]
) -> dict[str, Any]:
    """One operation's BulkResponse entry, its references resolved; whatever fails, fails
    this operation alone."""
    path, data = json.loads(_REFERENCE.sub(lambda m: created[m.group(1)], operation.text))
    try:
        # A savepoint around the whole operation, not only the provisioner's write: a failure
        # after the write (rendering its answer) must not leave it behind an error answer.
        with conn.begin_nested():
            try:
                out, new_id = _run_one(server, call, conn, operation, path, data)
            except SCIMException as exc:
                # The provisioner rolled its write back already; what it kept of a refused
                # duplicate (bridge.store.refusals) stays.
                return _failure(operation, exc.status, exc.detail, exc.scim_type or None)
    except Exception:
        log.exception(
            "bulk operation %d (%s %s) failed",
            operation.index,
            operation.request.get("method"),
            path,
            extra={"request_id": call.request_id},
        )
        return _failure(operation, 500, "internal error; see the server log", None)
    if new_id is not None and operation.bulk_id is not None:
        created[operation.bulk_id] = new_id
    return out


def _failure(
    operation: _Operation, status: int, detail: str, scim_type: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "method" in operation.request:
        out["method"] = operation.request["method"]
    if operation.bulk_id is not None:
        out["bulkId"] = operation.bulk_id
    out["status"] = str(status)
    out["response"] = error_body(status, detail, scim_type)
    return out


def _run_one(
    server: ScimServer, call: Call, conn: Any, operation: _Operation, path: Any, data: Any
) -> tuple[dict[str, Any], str | None]:
    """Run one operation on ``conn``; its BulkResponse entry and the id of what it created."""
    method = str(operation.request.get("method", "")).upper()
    match = _PATH.match(path) if isinstance(path, str) else None
    if match is None:
        raise InvalidValueException(detail=f"bulk path {path!r} is not /Users[/id] or /Groups[/id]")
    resource_type = "User" if match.group(1).lower() == "users" else "Group"
    resource_id = match.group(2)
    version = operation.request.get("version")
    provisioner = server.provisioner
    model = server.catalog.model(resource_type)
    out: dict[str, Any] = {"method": method}
    if operation.bulk_id is not None:
        out["bulkId"] = operation.bulk_id
    new_id = None
    if method == "POST" and resource_id is None:
        payload, tolerances = normalize_resource(
            data, model, server.known_schemas[resource_type], **server.door_limits
        )
        outcome = provisioner.create(
            call.cause, resource_type, payload, tolerances + ["bulk"], conn=conn
        )
        new_id = outcome.record.id
        status = 201
    elif method == "PUT" and resource_id:
        payload, tolerances = normalize_resource(
            data, model, server.known_schemas[resource_type], **server.door_limits
        )
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
        ops, tolerances = normalize_patch(data, model, **server.door_limits)
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
        return out, None
    else:
        raise InvalidValueException(detail=f"{method} {path} is not a bulk operation")
    meta = resource_json(outcome.record, call.base_url)["meta"]
    out["location"] = meta["location"]
    out["version"] = outcome.record.etag
    out["status"] = str(status)
    return out, new_id
