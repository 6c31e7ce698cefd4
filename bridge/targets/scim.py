"""The outbound ``scim`` target: an LMS that speaks SCIM 2.0 (TalentLMS, LearnUpon, 360Learning).

Accounts only: ``upsert_account`` finds the user by ``externalId`` (RFC 7644 §3.4.2.2 filter),
then creates it (POST, §3.3) or updates it (PATCH §3.5.2, or PUT §3.5.1 with ``update: put``);
suspend and reactivate PATCH ``active``. None of these LMSs enrols through SCIM (shared/LMS.md),
so enrolment and cohort intents are dead letters that say so. User bodies are validated and
errors read with scim2-models; PATCH bodies and search answers are plain JSON (see
``patch_payload``; vendors' list answers vary more than the models allow).

Options: ``update`` (patch | put), ``attributes`` (account attribute → SCIM path, beyond the
built-in vocabulary), ``auth`` (``{type: oauth2, token_url, scope, client_auth}`` when the LMS
issues SCIM tokens by client credentials, as 360Learning does), ``timeout`` (seconds).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError
from scim2_models import Context
from scim2_models import Error
from scim2_models import User

from bridge.auth.oauth2 import ClientCredentials
from bridge.auth.oauth2 import TokenError
from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.rest import AuthSpec
from bridge.targets.rest import RestConfigError
from bridge.targets.rest import build_auth
from bridge.targets.rest import retry_after

SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
NO_COURSES = "this LMS does not enrol through SCIM: add a rest target for courses"
OPTION_KEYS = ("update", "attributes", "auth", "timeout")

#: The bridge's account vocabulary (and SCIM's own names) → SCIM User attribute paths.
SCIM_PATHS = {
    "username": "userName",
    "userName": "userName",
    "idnumber": "externalId",
    "externalId": "externalId",
    "firstname": "name.givenName",
    "givenName": "name.givenName",
    "name.givenName": "name.givenName",
    "lastname": "name.familyName",
    "familyName": "name.familyName",
    "name.familyName": "name.familyName",
    "email": "emails",
    "title": "title",
    "displayName": "displayName",
    "nickName": "nickName",
    "preferredLanguage": "preferredLanguage",
    "locale": "locale",
    "timezone": "timezone",
    "userType": "userType",
    "active": "active",
}
# scimType values that say the request does not fit this LMS, not that the person's data is bad.
_PROVISIONING_TYPES = {"invalidFilter", "invalidPath", "noTarget", "mutability", "invalidVers"}


def scim_values(
    attributes: Mapping[str, Any], extra: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """SCIM path → value for the account attributes this LMS takes, and those it does not."""
    paths = {**SCIM_PATHS, **(extra or {})}
    values, ignored = {}, []
    for name, value in attributes.items():
        path = paths.get(name)
        if path is None:
            ignored.append(name)
        elif path == "emails":
            values[path] = (
                None if value is None else [{"value": value, "type": "work", "primary": True}]
            )
        else:
            values[path] = value
    return values, sorted(ignored)


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``name.givenName`` or ``urn:…:User:department`` in a resource document."""
    urn, _, attribute = path.rpartition(":")
    if urn:
        doc.setdefault("schemas", [USER_SCHEMA])
        if urn not in doc["schemas"]:
            doc["schemas"].append(urn)
        doc = doc.setdefault(urn, {})
    *parents, leaf = attribute.split(".")
    for parent in parents:
        doc = doc.setdefault(parent, {})
    if value is None:
        doc.pop(leaf, None)
    else:
        doc[leaf] = value


def user_payload(values: Mapping[str, Any]) -> dict[str, Any]:
    """A POST /Users body (RFC 7644 §3.3), the core attributes validated by scim2-models;
    ValidationError when a value cannot be a SCIM User's (an email that is not one…)."""
    core: dict[str, Any] = {"schemas": [USER_SCHEMA], "active": True}
    extensions: dict[str, Any] = {}
    for path, value in values.items():
        _set(extensions if path.startswith("urn:") else core, path, value)
    user: User[Any] = User.model_validate(core, scim_ctx=Context.RESOURCE_CREATION_REQUEST)
    body = user.model_dump(scim_ctx=Context.RESOURCE_CREATION_REQUEST)
    for urn in extensions.get("schemas", [])[1:]:
        body["schemas"].append(urn)
        body[urn] = extensions[urn]
    return body


def patch_payload(values: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH body (RFC 7644 §3.5.2): replace each value, remove each cleared one.

    Written as plain data: scim2-models' PatchOp checks paths against one User model, and an
    LMS's own extension attributes (``options.attributes``) are not in it."""
    operations = [
        {"op": "remove", "path": path}
        if value is None
        else {"op": "replace", "path": path, "value": value}
        for path, value in values.items()
    ]
    return {"schemas": [PATCH_SCHEMA], "Operations": operations}


def replacement(current: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A PUT body (RFC 7644 §3.5.1): the LMS's resource with the new values, read-only parts out."""
    doc = {k: v for k, v in current.items() if k not in ("meta", "groups")}
    for path, value in values.items():
        _set(doc, path, value)
    return doc


def equality_filter(attribute: str, value: str) -> str:
    """``externalId eq "…"``, the value escaped as a JSON string (RFC 7644 §3.4.2.2)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{attribute} eq "{escaped}"'


def scim_error(body: bytes | str) -> tuple[str, str | None]:
    """(detail, scimType) of a SCIM Error (RFC 7644 §3.12), or the body's text."""
    try:
        error = Error.model_validate_json(body)
    except (ValidationError, ValueError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return " ".join(text.split())[:300], None
    return (error.detail or f"HTTP {error.status}"), error.scim_type


def classify(status: int, headers: Mapping[str, str], body: bytes | str) -> Result:
    """An answer that is not the one the caller expects: retry, or dead with the SCIM Error."""
    if 200 <= status < 300:
        return Result.done(http_status=status)
    detail, scim_type = scim_error(body)
    said = f"HTTP {status}" + (f" {scim_type}" if scim_type else "") + f": {detail}"
    if status in (408, 429) or status >= 500:
        return Result.retry(said, after=retry_after(headers), http_status=status)
    if status in (401, 403):
        return Result.dead(
            Category.configuration, f"the LMS refused the credentials: {said}", http_status=status
        )
    if status in (400, 409, 422) and scim_type not in _PROVISIONING_TYPES:
        return Result.dead(Category.data_quality, said, http_status=status, scim_type=scim_type)
    return Result.dead(Category.configuration, said, http_status=status, scim_type=scim_type)


def validate_options(options: Mapping[str, Any]) -> list[str]:
    """Human-readable problems of a scim target's options (``bridge rules check``)."""
    problems = [f"options: unknown key {key!r}" for key in options if key not in OPTION_KEYS]
    if options.get("update", "patch") not in ("patch", "put"):
        problems.append("update: patch or put")
    attributes = options.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        problems.append("attributes: a mapping of account attribute → SCIM attribute path")
    auth = options.get("auth")
    if auth is not None and (
        not isinstance(auth, dict) or auth.get("type") != "oauth2" or not auth.get("token_url")
    ):
        problems.append("auth: {type: oauth2, token_url: …} (or leave it out for a bearer token)")
    return problems


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _user_url(user_id: str) -> str:
    return f"/Users/{quote(user_id, safe='')}"


class _Failed(Exception):
    """A call whose answer ends the delivery (carries the Result)."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.message)
        self.result = result


class ScimTarget:
    """A SCIM 2.0 service provider as an LMS target (see the module docstring)."""

    kind = "scim"

    def __init__(
        self,
        config: TargetConfig,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        problems = validate_options(config.options)
        if problems:
            raise RestConfigError(config.name, problems)
        self.name = config.name
        self.update = str(config.options.get("update", "patch"))
        self.extra: dict[str, str] = dict(config.options.get("attributes") or {})
        headers = {"Accept": f"{SCIM_JSON}, application/json"}
        self.auth: httpx.Auth | None = None
        raw_auth = config.options.get("auth")
        if raw_auth is not None:
            spec = AuthSpec(
                type="oauth2",
                token_url=str(raw_auth["token_url"]),
                scope=raw_auth.get("scope"),
                client_auth=str(raw_auth.get("client_auth", "basic")),
            )
            self.auth = build_auth(
                spec, credentials or {}, config.base_url, transport, name=self.name
            )
        else:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            auth=self.auth,
            transport=transport,
            timeout=float(config.options.get("timeout", 30.0)),
        )

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client with the target's base URL and credentials (readers use it)."""
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()
        if isinstance(self.auth, ClientCredentials):
            await self.auth.aclose()

    async def probe(self) -> Result:
        """Whether the LMS answers and takes the credentials: ``GET /ServiceProviderConfig``
        (RFC 7644 §4) with them. Retry: unreachable or throttled; dead: refused or not a SCIM
        service provider there; done: it answered (``detail.http_status``)."""
        try:
            response = await self._client.get("/ServiceProviderConfig")
        except httpx.TimeoutException as exc:
            return Result.retry(f"timed out: {type(exc).__name__}")
        except httpx.TransportError as exc:
            return Result.retry(f"network error: {exc}")
        except TokenError as exc:
            if exc.retryable:
                return Result.retry(str(exc))
            return Result.dead(Category.configuration, str(exc), http_status=401)
        result = classify(response.status_code, response.headers, response.content)
        if result.status is Status.done and not isinstance(_json(response).get("schemas"), list):
            return Result.dead(
                Category.configuration,
                f"GET /ServiceProviderConfig answered {response.status_code} without a SCIM "
                "ServiceProviderConfig",
                http_status=response.status_code,
            )
        return result

    async def deliver(self, delivery: Delivery) -> Result:
        calls: list[str] = []
        try:
            result = await self._deliver(delivery, calls)
        except _Failed as failed:
            result = failed.result
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            result = Result.dead(Category.data_quality, f"not a valid SCIM User: {problems}")
        except httpx.TimeoutException as exc:
            result = Result.retry(f"timed out: {type(exc).__name__}")
        except httpx.TransportError as exc:
            result = Result.retry(f"network error: {exc}")
        except TokenError as exc:
            result = (
                Result.retry(str(exc))
                if exc.retryable
                else Result.dead(Category.configuration, str(exc))
            )
        return dataclasses.replace(result, detail={**result.detail, "calls": calls})

    # -- calls -----------------------------------------------------------------------------

    async def _call(
        self,
        calls: list[str],
        method: str,
        url: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        response = await self._client.request(
            method,
            url,
            params=params,
            json=body,
            headers={"Content-Type": SCIM_JSON} if body is not None else None,
        )
        calls.append(f"{method} {url} {response.status_code}")
        return response

    async def _find(self, calls: list[str], attribute: str, value: str) -> dict[str, Any] | None:
        """The one user whose ``attribute`` (externalId or userName) is ``value``, or None.

        The answer is checked, not trusted: an LMS that ignores a filter it does not support
        answers with every user, and the first of those is not this person."""
        filter_text = equality_filter(attribute, value)
        response = await self._call(calls, "GET", "/Users", params={"filter": filter_text})
        if response.status_code != 200:
            raise _Failed(classify(response.status_code, response.headers, response.content))
        found = _json(response).get("Resources")

        def same(candidate: Any) -> bool:
            if attribute == "externalId":  # caseExact (RFC 7643 §4.1); userName is not
                return bool(candidate == value)
            return str(candidate).casefold() == value.casefold()

        users = [
            u
            for u in (found if isinstance(found, list) else [])
            if isinstance(u, dict) and u.get("id") and same(u.get(attribute))
        ]
        if len(users) > 1:
            raise _Failed(
                Result.dead(
                    Category.data_quality,
                    f"{len(users)} LMS users match {filter_text}: merge them in the LMS",
                )
            )
        return users[0] if users else None

    async def _user_id(self, delivery: Delivery, calls: list[str]) -> str | None:
        if delivery.lms_user_id is not None:
            return delivery.lms_user_id
        external_id = self._external_id(delivery)
        if external_id is None:
            return None
        found = await self._find(calls, "externalId", external_id)
        return str(found["id"]) if found else None

    @staticmethod
    def _external_id(delivery: Delivery) -> str | None:
        attributes = delivery.data.get("attributes") or {}
        for source in (attributes, delivery.account):
            for name in ("idnumber", "externalId"):
                if source.get(name) not in (None, ""):
                    return str(source[name])
        return None

    # -- intents ---------------------------------------------------------------------------

    async def _deliver(self, delivery: Delivery, calls: list[str]) -> Result:
        if delivery.kind == "upsert_account":
            return await self._upsert(delivery, calls)
        if delivery.kind in ("suspend_account", "reactivate_account"):
            active = delivery.kind == "reactivate_account"
            user_id = await self._user_id(delivery, calls)
            if user_id is None:
                if not active:
                    return Result.done(None, "no account in the LMS: nothing to suspend")
                return Result.dead(
                    Category.configuration, "no account in the LMS for this person yet"
                )
            return await self._patch(calls, user_id, {"active": active})
        return Result.dead(Category.configuration, NO_COURSES)

    async def _upsert(self, delivery: Delivery, calls: list[str]) -> Result:
        attributes = dict(delivery.data.get("attributes") or {})
        values, ignored = scim_values(attributes, self.extra)
        note = {"ignored": ignored} if ignored else {}
        if delivery.lms_user_id is not None:
            result = await self._update(calls, delivery.lms_user_id, values)
            if result.detail.get("http_status") != 404:
                return dataclasses.replace(result, detail={**result.detail, **note})
            # The link is stale (deleted in the LMS): match on externalId, or create anew.
        external_id = self._external_id(delivery)
        if external_id is None:
            return Result.dead(
                Category.data_quality, "no idnumber (externalId) to match the LMS account on"
            )
        found = await self._find(calls, "externalId", external_id)
        if found is not None:
            result = await self._update(calls, str(found["id"]), values, current=found)
            return dataclasses.replace(result, detail={**result.detail, **note})
        full, _ = scim_values({**delivery.account, **attributes}, self.extra)
        full.setdefault("externalId", external_id)
        full = {k: v for k, v in full.items() if v is not None}
        response = await self._call(calls, "POST", "/Users", body=user_payload(full))
        if response.status_code in (200, 201):
            created = _json(response).get("id") or (
                await self._find(calls, "externalId", external_id) or {}
            ).get("id")
            return Result.done(str(created) if created else None, "created", **note)
        if response.status_code != 409:
            raise _Failed(classify(response.status_code, response.headers, response.content))
        # 409 uniqueness: the userName is taken. Adopt that account unless another person's
        # externalId is on it (two people, one userName: the HR data must be fixed).
        user_name = full.get("userName")
        taken = await self._find(calls, "userName", str(user_name)) if user_name else None
        if taken is None:
            raise _Failed(classify(response.status_code, response.headers, response.content))
        if taken.get("externalId") not in (None, "", external_id):
            return Result.dead(
                Category.data_quality,
                f"userName {user_name!r} belongs to the LMS account of externalId {taken['externalId']!r}",
            )
        result = await self._update(calls, str(taken["id"]), full, current=taken)
        return dataclasses.replace(result, detail={**result.detail, **note, "adopted": True})

    async def _update(
        self,
        calls: list[str],
        user_id: str,
        values: Mapping[str, Any],
        *,
        current: Mapping[str, Any] | None = None,
    ) -> Result:
        if not values:
            return Result.done(user_id, "nothing to change")
        if self.update == "patch":
            return await self._patch(calls, user_id, values)
        if current is None or "userName" not in current:
            response = await self._call(calls, "GET", _user_url(user_id))
            if response.status_code != 200:
                return dataclasses.replace(
                    classify(response.status_code, response.headers, response.content),
                    lms_user_id=user_id,
                )
            current = _json(response)
        response = await self._call(
            calls, "PUT", _user_url(user_id), body=replacement(current, values)
        )
        return self._settled(response, user_id)

    async def _patch(self, calls: list[str], user_id: str, values: Mapping[str, Any]) -> Result:
        response = await self._call(calls, "PATCH", _user_url(user_id), body=patch_payload(values))
        return self._settled(response, user_id)

    @staticmethod
    def _settled(response: httpx.Response, user_id: str) -> Result:
        result = classify(response.status_code, response.headers, response.content)
        if result.status == Status.done:
            return Result.done(user_id, "updated", http_status=response.status_code)
        return dataclasses.replace(result, lms_user_id=user_id)
