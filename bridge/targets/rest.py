"""The declarative ``rest`` target: an LMS REST API described in ``targets.yaml`` (DESIGN §7).

The target's ``options`` (parsed from YAML by ``bridge.rules.loader``) name one request per
intent; ``rules/examples/docebo/targets.yaml`` is a worked example. The keys::

    auth:      {type: none | bearer | basic | oauth2, …}   credentials: token | username
               (+ password) | client_id + client_secret; oauth2 takes token_url, scope,
               client_auth (basic | post); bearer takes header, prefix
    headers, timeout, maps: {name: {value: LMS value}}, error_message: [JSON paths]
    responses: [{status: 409 | "4xx" | [..], contains: text, match: {path: value},
                 outcome: done | already_done | retry | permanent, category, message}]
    lookup:    {method, url, items: $.data.items, match: {field: template}, id: user_id}
    create_account, update_account, suspend_account, reactivate_account, enrol,
    suspend_enrolment, unenrol, add_cohort_member, remove_cohort_member:
               {method, url, body, encoding: json | form, headers, id, responses, error_message}

Answers are classified by the request's ``responses``, then the target's, then by default:
2xx done; 408/425/429/5xx retry (Retry-After honoured); 409 on a create already done;
404 on a removal already done, on enrol/add_cohort_member a mapping dead letter; 400/409/422
data_quality dead letters; 401/403 and the rest configuration dead letters. A create the LMS
calls a duplicate is looked up and updated, so re-delivery never makes a second account.

Templates are rendered by ``bridge.targets.templates`` rather than with Jinja (a large
dependency that runs code): ``{{ path }}``, ``{{ path? }}`` (optional: dropped when missing),
filters ``default: x``, ``lower``, ``upper``, ``map: name`` and ``days_from_today``; paths over
plain data, no eval, values percent-encoded in URLs. Roots: person, kind, rule, target, ref, data, attributes
(as the intent sent them), account (known account with the new values), lms_user_id, today.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC
from datetime import date
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from bridge.auth.oauth2 import ClientCredentials
from bridge.auth.oauth2 import TokenError
from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.rest_auth import build_auth
from bridge.targets.rest_spec import AUTH_CREDENTIALS
from bridge.targets.rest_spec import AUTH_KEYS
from bridge.targets.rest_spec import CREATES
from bridge.targets.rest_spec import DEFAULT_MESSAGES
from bridge.targets.rest_spec import LOOKUP_KEYS
from bridge.targets.rest_spec import METHODS
from bridge.targets.rest_spec import OPTION_KEYS
from bridge.targets.rest_spec import OUTCOMES
from bridge.targets.rest_spec import REMOVALS
from bridge.targets.rest_spec import REQUEST_KEYS
from bridge.targets.rest_spec import REQUESTS
from bridge.targets.rest_spec import RULE_KEYS
from bridge.targets.rest_spec import AuthSpec
from bridge.targets.rest_spec import RequestSpec
from bridge.targets.rest_spec import RestConfigError
from bridge.targets.rest_spec import RestSpec
from bridge.targets.rest_spec import Rule
from bridge.targets.rest_spec import parse_options
from bridge.targets.rest_spec import validate_options
from bridge.targets.templates import FILTERS
from bridge.targets.templates import MISSING
from bridge.targets.templates import ROOTS
from bridge.targets.templates import Expr
from bridge.targets.templates import Scope
from bridge.targets.templates import TemplateError
from bridge.targets.templates import as_text
from bridge.targets.templates import evaluate
from bridge.targets.templates import extract
from bridge.targets.templates import parse_expr
from bridge.targets.templates import render_text
from bridge.targets.templates import render_value

__all__ = [
    "AUTH_CREDENTIALS",
    "AUTH_KEYS",
    "CREATES",
    "DEFAULT_MESSAGES",
    "FILTERS",
    "LOOKUP_KEYS",
    "METHODS",
    "MISSING",
    "OPTION_KEYS",
    "OUTCOMES",
    "REMOVALS",
    "REQUESTS",
    "REQUEST_KEYS",
    "ROOTS",
    "RULE_KEYS",
    "AuthSpec",
    "Expr",
    "RequestSpec",
    "RestConfigError",
    "RestSpec",
    "RestTarget",
    "Rule",
    "Scope",
    "TemplateError",
    "build_auth",
    "build_request",
    "classify",
    "evaluate",
    "extract",
    "found_id",
    "lms_message",
    "parse_body",
    "parse_expr",
    "parse_options",
    "render_text",
    "render_value",
    "retry_after",
    "scope_for",
    "validate_options",
]


# -- requests and answers (pure) -----------------------------------------------------------------


def scope_for(
    delivery: Delivery,
    *,
    maps: Mapping[str, Mapping[str, Any]] | None = None,
    today: date | None = None,
) -> Scope:
    """What the templates of one delivery read (``account`` = known account + new values)."""
    data = delivery.data
    raw = data.get("attributes")
    attributes: dict[str, Any] = raw if isinstance(raw, dict) else {}
    account = {**delivery.account, **{k: v for k, v in attributes.items() if v is not None}}
    values = {
        "person": delivery.intent.get("person"),
        "kind": delivery.kind,
        "rule": delivery.intent.get("rule"),
        "target": delivery.intent.get("target"),
        "ref": delivery.ref,
        "data": data,
        "attributes": attributes,
        "account": account,
        "lms_user_id": delivery.lms_user_id,
        "today": (today or date.today()).isoformat(),
    }
    return Scope(values, maps or {}, today or date.today())


def _form(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """PHP-style form fields: ``a[b][0]=…`` (what most form-encoded LMS APIs parse)."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return [(prefix, "" if value is None else as_text(value))]
    pairs = []
    for key, item in items:
        pairs += _form(item, f"{prefix}[{key}]" if prefix else str(key))
    return pairs


def build_request(
    spec: RequestSpec, delivery: Delivery, *, today: date | None = None
) -> tuple[str, str, dict[str, str], str | None]:
    """(method, URL under base_url, headers, encoded body) for one delivery; TemplateError if
    a value the templates need is missing."""
    scope = scope_for(delivery, maps=spec.maps, today=today)
    url = render_text(spec.url, scope, url=True)
    headers = {}
    for name, template in spec.headers.items():
        value = render_text(template, scope)
        if "\r" in value or "\n" in value:
            raise TemplateError(f"header {name} would contain a line break")
        headers[name] = value
    body = None
    if spec.body is not None and spec.method != "GET":
        rendered = render_value(spec.body, scope)
        if spec.encoding == "form":
            body = urlencode(_form(rendered))
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            body = json.dumps(rendered, ensure_ascii=False, separators=(",", ":"))
            headers.setdefault("Content-Type", "application/json")
    return spec.method, url, headers, body


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After (RFC 9110 §10.2.3) in seconds: delta-seconds or an HTTP date."""
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def parse_body(body: bytes | str | None) -> tuple[str, Any]:
    """An answer's text and its JSON (MISSING when it is not JSON)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        return text, json.loads(text) if text.strip() else MISSING
    except ValueError:
        return text, MISSING


def lms_message(spec: RequestSpec, text: str, doc: Any) -> str:
    """The LMS's own words about a failure, for the dead letter."""
    for path in spec.error_message:
        value = extract(doc, path)
        if isinstance(value, list):
            value = "; ".join(as_text(v) for v in value)
        if value not in (MISSING, None, ""):
            return as_text(value)[:500]
    return " ".join(text.split())[:300]


def classify(
    spec: RequestSpec, status: int, headers: Mapping[str, str], body: bytes | str | None
) -> Result:
    """What an answer means: the spec's rules first, then the defaults (module docstring)."""
    text, doc = parse_body(body)
    said = lms_message(spec, text, doc)
    for rule in spec.responses:
        if rule.matches(status, text, doc):
            return _outcome(
                spec, rule.outcome, status, headers, doc, said, rule.category, rule.message
            )
    if 200 <= status < 300:
        return _outcome(spec, "done", status, headers, doc, said)
    if status in (408, 425, 429) or status >= 500:
        return _outcome(spec, "retry", status, headers, doc, said)
    if status == 409 and spec.name in CREATES:
        return _outcome(spec, "already_done", status, headers, doc, said)
    if status == 404 and spec.name == "lookup":
        return _outcome(spec, "done", status, headers, doc, said, note="not found")
    if status == 404 and spec.name in REMOVALS:
        return _outcome(spec, "already_done", status, headers, doc, said)
    category = Category.configuration
    if status in (400, 409, 422):
        category = Category.data_quality
    elif status == 404 and spec.name in ("enrol", "add_cohort_member"):
        category = Category.configuration
    return _outcome(spec, "permanent", status, headers, doc, said, category)


def _outcome(
    spec: RequestSpec,
    outcome: str,
    status: int,
    headers: Mapping[str, str],
    doc: Any,
    said: str,
    category: Category = Category.configuration,
    note: str = "",
) -> Result:
    where = f"{spec.name}: HTTP {status}"
    if outcome == "retry":
        return Result.retry(
            f"{where}: {note or said}".strip(": "), after=retry_after(headers), http_status=status
        )
    if outcome == "permanent":
        return Result.dead(
            category, f"{where}: {' — '.join(m for m in (note, said) if m)}", http_status=status
        )
    found = extract(doc, spec.id) if spec.id and spec.name != "lookup" else MISSING
    lms_id = (
        None if found is MISSING or found is None or isinstance(found, dict | list) else str(found)
    )
    return Result.done(
        lms_id,
        note or (f"already done ({where})" if outcome == "already_done" else ""),
        outcome=outcome,
        http_status=status,
    )


def found_id(spec: RequestSpec, delivery: Delivery, body: bytes | str | None) -> str | None:
    """The account id a lookup answer names: among ``items``, the one whose ``match`` fields
    equal the rendered values (all of them when there is no ``match``), else None."""
    _, doc = parse_body(body)
    items = extract(doc, spec.items) if spec.items else [doc]
    if not isinstance(items, list):
        items = [] if items is MISSING or items is None else [items]
    scope = scope_for(delivery, maps=spec.maps)
    wanted = {path: render_value(value, scope) for path, value in spec.match.items()}

    def same(a: Any, b: Any) -> bool:
        return as_text(a).casefold() == as_text(b).casefold()

    for item in items:
        if all(same(extract(item, path), value) for path, value in wanted.items()):
            found = extract(item, spec.id or "id")
            if found not in (MISSING, None, "") and not isinstance(found, dict | list):
                return str(found)
    return None


# -- the target (thin shell) --------------------------------------------------------------------


class RestTarget:
    """An LMS driven by the requests its ``options`` describe (see the module docstring)."""

    kind = "rest"

    def __init__(
        self,
        config: TargetConfig,
        credentials: Mapping[str, str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = config.name
        self.spec, problems = parse_options(config.options)
        if problems:
            raise RestConfigError(config.name, problems)
        self.auth = build_auth(
            self.spec.auth, credentials, config.base_url, transport, name=config.name
        )
        self._client = httpx.AsyncClient(
            base_url=config.base_url,
            headers=self.spec.headers,
            auth=self.auth,
            transport=transport,
            timeout=self.spec.timeout,
        )

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client with the target's base URL, headers and auth (readers use it)."""
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()
        if isinstance(self.auth, ClientCredentials):
            await self.auth.aclose()

    async def deliver(self, delivery: Delivery) -> Result:
        calls: list[str] = []
        try:
            result = await self._deliver(delivery, calls)
        except TemplateError as exc:
            result = Result.dead(exc.category, f"cannot build the request: {exc}")
        except TokenError as exc:
            result = (
                Result.retry(str(exc))
                if exc.retryable
                else Result.dead(Category.configuration, str(exc))
            )
        except httpx.TimeoutException as exc:
            result = Result.retry(f"timed out: {type(exc).__name__}")
        except httpx.TransportError as exc:
            result = Result.retry(f"network error: {exc}")
        return dataclasses.replace(result, detail={**result.detail, "calls": calls})

    async def _send(
        self, spec: RequestSpec, delivery: Delivery, calls: list[str]
    ) -> tuple[Result, httpx.Response]:
        method, url, headers, body = build_request(spec, delivery)
        response = await self._client.request(
            method, url, headers=headers, content=body.encode() if body is not None else None
        )
        calls.append(f"{method} {url.split('?', 1)[0]} {response.status_code}")
        return classify(spec, response.status_code, response.headers, response.content), response

    async def _lookup(
        self, delivery: Delivery, calls: list[str]
    ) -> tuple[str | None, Result | None]:
        spec = self.spec.requests.get("lookup")
        if spec is None:
            return None, None
        result, response = await self._send(spec, delivery, calls)
        if result.status != Status.done:
            return None, result
        if response.status_code == 404:
            return None, None
        return found_id(spec, delivery, response.content), None

    async def _deliver(self, delivery: Delivery, calls: list[str]) -> Result:
        if delivery.kind == "upsert_account":
            return await self._upsert(delivery, calls)
        spec = self.spec.requests.get(delivery.kind)
        if spec is None:
            return Result.dead(
                Category.configuration,
                f"target {self.name!r} has no {delivery.kind} request: add one to its options in "
                "targets.yaml, or keep rules of this kind off this target",
            )
        user_id = delivery.lms_user_id
        if user_id is None:
            user_id, failed = await self._lookup(delivery, calls)
            if failed is not None:
                return failed
        if user_id is None:
            if delivery.kind in REMOVALS:
                return Result.done(None, "no account in the LMS: nothing to remove")
            return Result.dead(Category.configuration, "no account in the LMS for this person yet")
        result, _ = await self._send(
            spec, dataclasses.replace(delivery, lms_user_id=user_id), calls
        )
        return dataclasses.replace(result, lms_user_id=result.lms_user_id or user_id)

    async def _upsert(self, delivery: Delivery, calls: list[str]) -> Result:
        user_id, linked = delivery.lms_user_id, delivery.lms_user_id is not None
        if user_id is None:
            user_id, failed = await self._lookup(delivery, calls)
            if failed is not None:
                return failed
        if user_id is not None:
            result = await self._update(delivery, user_id, calls)
            if not (linked and result.detail.get("http_status") == 404):
                return result
            # The link is stale (the account was deleted in the LMS): find or create it anew.
            user_id, failed = await self._lookup(
                dataclasses.replace(delivery, lms_user_id=None), calls
            )
            if failed is not None:
                return failed
            if user_id is not None:
                return await self._update(delivery, user_id, calls)
        create = self.spec.requests["create_account"]
        result, _ = await self._send(create, delivery, calls)
        if result.status != Status.done or result.lms_user_id is not None:
            return result
        # Created without an id in the answer, or it existed (409): find it, then update it.
        user_id, failed = await self._lookup(delivery, calls)
        if failed is not None:
            return failed
        if user_id is None:
            return result
        if result.detail.get("outcome") == "already_done":
            return await self._update(delivery, user_id, calls)
        return dataclasses.replace(result, lms_user_id=user_id)

    async def _update(self, delivery: Delivery, user_id: str, calls: list[str]) -> Result:
        spec = self.spec.requests.get("update_account")
        if spec is None:
            return Result.done(user_id, "the account exists; the target has no update_account")
        result, _ = await self._send(
            spec, dataclasses.replace(delivery, lms_user_id=user_id), calls
        )
        return dataclasses.replace(result, lms_user_id=result.lms_user_id or user_id)
