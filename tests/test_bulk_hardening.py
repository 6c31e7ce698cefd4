"""``POST /Bulk`` (RFC 7644 §3.7) under failure: a non-SCIM failure is one operation's 500,
``failOnErrors`` counts every error, bulkIds are checked before anything runs, and ``bulkId:``
references resolve in dependency order (§3.7.1, §3.7.2) in one pass."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from bridge.provision import Provisioner
from bridge.scim.bulk import dependency_order
from bridge.store import journal
from bridge.store.engine import Database
from tests.conftest import ENTERPRISE
from tests.conftest import GROUP_SCHEMA
from tests.conftest import USER_SCHEMA
from tests.conftest import assert_scim
from tests.conftest import user_payload

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def _bulk(operations: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"schemas": [BULK], "Operations": operations, **extra}


def _create_user(bulk_id: str, user_name: str, **extra: Any) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/Users",
        "bulkId": bulk_id,
        "data": user_payload(user_name, **extra),
    }


def _create_group(bulk_id: str, name: str, *member_bulk_ids: str) -> dict[str, Any]:
    members = [{"value": f"bulkId:{m}"} for m in member_bulk_ids]
    data = {"schemas": [GROUP_SCHEMA], "displayName": name, "members": members}
    return {"method": "POST", "path": "/Groups", "bulkId": bulk_id, "data": data}


async def _user_names(client: httpx.AsyncClient) -> list[str]:
    listed = assert_scim(await client.get("/Users"), 200)
    return sorted(r["userName"] for r in listed["Resources"])


# -- a non-SCIM failure is that operation's 500 -----------------------------------------------


def _fault_mid_write(provisioner: Provisioner, database_error: bool) -> Callable[..., Any]:
    """``_project`` for "boom" fails after its row and journal entry are written."""
    original = provisioner._project

    def project(conn: Any, record: Any, *args: Any, **kwargs: Any) -> Any:
        if record.name == "boom":
            if database_error:  # a real IntegrityError, raised by the database itself
                conn.execute(text("INSERT INTO resources (id) VALUES (NULL)"))
            raise RuntimeError("injected fault")
        return original(conn, record, *args, **kwargs)

    return project


def _fault_after_write(provisioner: Provisioner) -> Callable[..., Any]:
    """``create`` for "boom" fails once the provisioner has written and released its savepoint."""
    original = provisioner.create

    def create(
        cause: Any, resource_type: str, payload: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        outcome = original(cause, resource_type, payload, *args, **kwargs)
        if payload.get("userName") == "boom":
            raise RuntimeError("injected fault")
        return outcome

    return create


@pytest.mark.parametrize("fault", ["bug mid-write", "IntegrityError mid-write", "bug after write"])
async def test_a_non_scim_failure_is_that_operations_500_and_rolls_back_only_it(
    client: httpx.AsyncClient,
    provisioner: Provisioner,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    if fault == "bug after write":
        monkeypatch.setattr(provisioner, "create", _fault_after_write(provisioner))
    else:
        injected = _fault_mid_write(provisioner, database_error=fault.startswith("Integrity"))
        monkeypatch.setattr(provisioner, "_project", injected)
    operations = [_create_user("a", "alice"), _create_user("b", "boom"), _create_user("c", "carol")]
    with caplog.at_level(logging.ERROR, logger="bridge.scim"):
        response = await client.post(
            "/Bulk", json=_bulk(operations), headers={"X-Request-Id": "bulk-fault-1"}
        )
    results = assert_scim(response, 200)["Operations"]
    assert [(r["bulkId"], r["status"]) for r in results] == [
        ("a", "201"),
        ("b", "500"),
        ("c", "201"),
    ]
    assert results[1]["response"] == {
        "schemas": [ERROR],
        "status": "500",
        "detail": "internal error; see the server log",
    }
    assert await _user_names(client) == ["alice", "carol"]
    with db.read() as conn:
        journaled = {e.after["userName"] for e in journal.read(conn) if e.after}
    assert journaled == {"alice", "carol"}
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info is not None
    assert logged.request_id == "bulk-fault-1"  # type: ignore[attr-defined]


async def test_fail_on_errors_counts_a_non_scim_failure(
    client: httpx.AsyncClient, provisioner: Provisioner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        provisioner, "_project", _fault_mid_write(provisioner, database_error=False)
    )
    operations = [_create_user("b", "boom"), _create_user("c", "carol")]
    response = await client.post("/Bulk", json=_bulk(operations, failOnErrors=1))
    assert [r["status"] for r in assert_scim(response, 200)["Operations"]] == ["500"]
    assert await _user_names(client) == []


# -- failOnErrors counts an unresolved bulkId --------------------------------------------------


async def test_fail_on_errors_counts_an_unresolved_bulk_id(client: httpx.AsyncClient) -> None:
    operations = [_create_group("g", "G", "nope"), _create_user("c", "carol")]
    response = await client.post("/Bulk", json=_bulk(operations, failOnErrors=1))
    (result,) = assert_scim(response, 200)["Operations"]
    assert (result["bulkId"], result["status"]) == ("g", "409")
    assert result["response"]["scimType"] == "invalidValue"
    assert "'nope'" in result["response"]["detail"]
    assert await _user_names(client) == []


# -- bulkIds are checked before anything runs --------------------------------------------------


@pytest.mark.parametrize(
    "second",
    [
        pytest.param({"bulkId": "a"}, id="duplicate"),
        pytest.param({"bulkId": 7}, id="integer"),
        pytest.param({"bulkId": {"id": "b"}}, id="object"),
        pytest.param({"bulkId": ""}, id="empty"),
        pytest.param({"bulkId": "b c"}, id="not nameable by a reference"),
    ],
)
async def test_a_malformed_or_duplicate_bulk_id_refuses_the_whole_request(
    client: httpx.AsyncClient, second: dict[str, Any]
) -> None:
    operations = [_create_user("a", "alice"), {**_create_user("b", "bob"), **second}]
    body = assert_scim(await client.post("/Bulk", json=_bulk(operations)), 400)
    assert body["scimType"] == "invalidValue"
    assert "Operations[1].bulkId" in body["detail"]
    assert await _user_names(client) == []


@pytest.mark.parametrize(
    "bulk_id", [pytest.param({}, id="absent"), pytest.param({"bulkId": None}, id="null")]
)
async def test_a_post_without_a_bulk_id_is_accepted(
    client: httpx.AsyncClient, bulk_id: dict[str, Any]
) -> None:
    operation = {"method": "POST", "path": "/Users", "data": user_payload("alice"), **bulk_id}
    (result,) = assert_scim(await client.post("/Bulk", json=_bulk([operation])), 200)["Operations"]
    assert result["status"] == "201"
    assert "bulkId" not in result
    assert await _user_names(client) == ["alice"]


# -- references resolve in dependency order ----------------------------------------------------


def test_dependency_order_keeps_request_order_but_for_references() -> None:
    assert dependency_order(["a", "b", None], [[], [], []]) == ([0, 1, 2], [])
    assert dependency_order(["a", "b", "c"], [["b"], [], []]) == ([1, 0, 2], [])
    assert dependency_order(["a", "b", "c"], [["c"], ["a"], []]) == ([2, 0, 1], [])
    assert dependency_order(["a", None], [["unknown"], []]) == ([0, 1], [])


def test_dependency_order_leaves_circular_references_and_what_waits_on_them() -> None:
    assert dependency_order(["a", "b", "c", "d"], [["b"], ["a"], [], ["a"]]) == ([2], [0, 1, 3])
    assert dependency_order(["a", "b"], [["a"], []]) == ([1], [0])


async def test_1000_bulk_ids_chained_in_reverse_resolve_in_request_order(
    client: httpx.AsyncClient,
) -> None:
    count = 1000
    operations = []
    for i in range(count):
        extra: dict[str, Any] = {}
        if i + 1 < count:  # each user's manager is created by the next operation
            manager = {"manager": {"value": f"bulkId:u{i + 1}"}}
            extra = {"schemas": [USER_SCHEMA, ENTERPRISE], ENTERPRISE: manager}
        operations.append(_create_user(f"u{i}", f"user{i}", **extra))
    results = assert_scim(await client.post("/Bulk", json=_bulk(operations)), 200)["Operations"]
    assert [r["bulkId"] for r in results] == [f"u{i}" for i in range(count)]
    assert {r["status"] for r in results} == {"201"}
    ids = [r["location"].rsplit("/", 1)[1] for r in results]
    for i in (0, 500, count - 2):
        user = assert_scim(await client.get(f"/Users/{ids[i]}"), 200)
        assert user[ENTERPRISE]["manager"]["value"] == ids[i + 1]


async def test_circular_bulk_id_references_are_409_each_and_the_rest_runs(
    client: httpx.AsyncClient,
) -> None:
    operations = [
        _create_group("g1", "One", "g2"),
        _create_group("g2", "Two", "g1"),
        _create_user("u", "alice"),
        _create_group("g3", "Three", "g1", "u"),
        _create_group("g4", "Self", "g4"),
    ]
    results = assert_scim(await client.post("/Bulk", json=_bulk(operations)), 200)["Operations"]
    assert [(r["bulkId"], r["status"]) for r in results] == [
        ("g1", "409"),
        ("g2", "409"),
        ("u", "201"),
        ("g3", "409"),
        ("g4", "409"),
    ]
    refused = [r["response"] for r in results if r["status"] == "409"]
    named = ["g2", "g1", "g1", "g4"]
    for response, bulk_id in zip(refused, named, strict=True):
        assert response["scimType"] == "invalidValue"
        assert f"bulkId {bulk_id!r} waits on a circular reference" in response["detail"]
    assert assert_scim(await client.get("/Groups"), 200)["totalResults"] == 0
    assert await _user_names(client) == ["alice"]
