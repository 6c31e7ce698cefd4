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
data_quality dead letters; 401/403 and the rest provisioning dead letters. A create the LMS
calls a duplicate is looked up and updated, so re-delivery never makes a second account.

Templates are rendered here rather than with Jinja (a large dependency that runs code):
``{{ path }}``, ``{{ path? }}`` (optional: dropped when missing), filters ``default: x``,
``lower``, ``upper``, ``map: name`` and ``days_from_today``; paths over plain data, no eval,
values percent-encoded in URLs. Roots: person, kind, rule, target, ref, data, attributes
(as the intent sent them), account (known account with the new values), lms_user_id, today.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Collection
from collections.abc import Generator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import timedelta
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any
from urllib.parse import quote
from urllib.parse import urlencode
from urllib.parse import urljoin

import httpx

from bridge.auth.oauth2 import ClientCredentials
from bridge.auth.oauth2 import TokenError
from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status

REQUESTS = (
    "lookup",
    "create_account",
    "update_account",
    "suspend_account",
    "reactivate_account",
    "enrol",
    "suspend_enrolment",
    "unenrol",
    "add_cohort_member",
    "remove_cohort_member",
)
OPTION_KEYS = ("auth", "headers", "timeout", "maps", "responses", "error_message", *REQUESTS)
REQUEST_KEYS = ("method", "url", "headers", "body", "encoding", "id", "responses", "error_message")
LOOKUP_KEYS = (*REQUEST_KEYS, "items", "match")
RULE_KEYS = ("status", "contains", "match", "outcome", "category", "message")
AUTH_KEYS = {
    "none": ("type",),
    "bearer": ("type", "header", "prefix"),
    "basic": ("type",),
    "oauth2": ("type", "token_url", "scope", "client_auth"),
}
AUTH_CREDENTIALS = {
    "none": (),
    "bearer": ("token",),
    "basic": ("username",),
    "oauth2": ("client_id", "client_secret"),
}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
OUTCOMES = ("done", "already_done", "retry", "permanent")
ROOTS = (
    "person",
    "kind",
    "rule",
    "target",
    "ref",
    "data",
    "attributes",
    "account",
    "lms_user_id",
    "today",
)
FILTERS = {"default": True, "lower": False, "upper": False, "map": True, "days_from_today": False}
CREATES = frozenset({"create_account", "enrol", "add_cohort_member"})
REMOVALS = frozenset({"suspend_account", "suspend_enrolment", "unenrol", "remove_cohort_member"})
# Where LMS APIs put their error text (Docebo: `message`, often a list; Canvas: `errors`).
DEFAULT_MESSAGES = (
    "message",
    "error.message",
    "error_description",
    "error",
    "detail",
    "errors[0].message",
    "errors[0]",
    "errors",
)


class RestConfigError(ValueError):
    """The target's options or credentials cannot drive an LMS (``problems`` says why)."""

    def __init__(self, name: str, problems: list[str]) -> None:
        super().__init__(f"target {name!r}: " + "; ".join(problems))
        self.problems = problems


# -- templates ------------------------------------------------------------------------------


class _Missing(Enum):
    value = 0


MISSING = _Missing.value
_OMIT = object()
_PLACEHOLDER = re.compile(r"\{\{((?:(?!\{\{|\}\}).)*)\}\}", re.S)
_PATH = re.compile(r"\$?(?:\.?[A-Za-z_][\w-]*|\[\d+\])*")
_STEP = re.compile(r"\.?([A-Za-z_][\w-]*)|\[(\d+)\]")


class TemplateError(ValueError):
    """A template cannot be rendered for this delivery (a value is missing, a map has no key)."""

    def __init__(self, message: str, category: Category = Category.data_quality) -> None:
        super().__init__(message)
        self.category = category


@dataclass(frozen=True)
class Expr:
    """One ``{{ path? | filter: arg }}``."""

    path: str
    optional: bool = False
    filters: tuple[tuple[str, Any], ...] = ()


def extract(doc: Any, path: str) -> Any:
    """``$.data.items[0].id``, ``data.id`` or ``id`` in plain data; MISSING when absent."""
    path = path.strip()
    if not _PATH.fullmatch(path):
        raise TemplateError(f"not a path: {path!r}")
    node = doc
    for name, index in _STEP.findall(path.removeprefix("$")):
        if name and isinstance(node, Mapping) and name in node:
            node = node[name]
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return MISSING
    return node


def _literal(text: str) -> Any:
    text = text.strip()
    if text[:1] == "'" and text[-1:] == "'" and len(text) > 1:
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: a map name


def _split_filters(text: str) -> list[str]:
    parts, current, quote_char = [], "", ""
    for char in text:
        if quote_char:
            quote_char = "" if char == quote_char else quote_char
        elif char in "'\"":
            quote_char = char
        elif char == "|":
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def parse_expr(text: str) -> Expr:
    """The inside of ``{{ … }}``; TemplateError for syntax a rule author got wrong."""
    head, *rest = _split_filters(text)
    path = head.strip()
    optional = path.endswith("?")
    path = path.removesuffix("?").strip()
    if not path or not _PATH.fullmatch(path) or path.startswith(("$", "[")):
        raise TemplateError(f"not a value path: {head.strip()!r}")
    root = _STEP.match(path)
    if root is None or root.group(1) not in ROOTS:
        raise TemplateError(f"unknown value {path!r}: templates read {', '.join(ROOTS)}")
    filters = []
    for item in rest:
        name, _, argument = item.partition(":")
        name = name.strip()
        if name not in FILTERS:
            close = difflib.get_close_matches(name, list(FILTERS), n=1)
            hint = (
                f" (did you mean {close[0]!r}?)" if close else f" (filters: {', '.join(FILTERS)})"
            )
            raise TemplateError(f"unknown filter {name!r}{hint}")
        if FILTERS[name] and not argument.strip():
            raise TemplateError(f"filter {name!r} needs an argument: `{name}: …`")
        filters.append((name, _literal(argument) if argument.strip() else None))
    return Expr(path, optional, tuple(filters))


@dataclass(frozen=True)
class Scope:
    """What templates can read: the delivery's values, the target's maps, today's date."""

    values: dict[str, Any]
    maps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    today: date = field(default_factory=date.today)


def _filter(name: str, argument: Any, value: Any, scope: Scope) -> Any:
    if name == "default":
        return argument if value is MISSING or value is None else value
    if value is MISSING or value is None:
        return value
    if name in ("lower", "upper"):
        return str(value).lower() if name == "lower" else str(value).upper()
    if name == "map":
        table = scope.maps.get(str(argument))
        if table is None:
            raise TemplateError(f"no map {argument!r} in the target's `maps`", Category.mapping)
        if str(value) not in table:
            raise TemplateError(f"map {argument!r} has no entry {value!r}", Category.mapping)
        return table[str(value)]
    try:
        return (scope.today + timedelta(days=int(value))).isoformat()
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"days_from_today needs a number of days, not {value!r}") from exc


def evaluate(expr: Expr, scope: Scope) -> Any:
    value = extract(scope.values, expr.path)
    for name, argument in expr.filters:
        value = _filter(name, argument, value, scope)
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def render_text(template: str, scope: Scope, *, url: bool = False) -> str:
    """Every ``{{ … }}`` replaced by its value as text (percent-encoded when ``url``)."""

    def replace(match: re.Match[str]) -> str:
        expr = parse_expr(match.group(1))
        value = evaluate(expr, scope)
        if value is MISSING or value is None:
            if expr.optional:
                return ""
            raise TemplateError(f"no value for {expr.path}")
        text = _text(value)
        if not url:
            return text
        # "." and ".." would be dot-segments (RFC 3986 §5.2.4) and climb the path.
        return quote(text, safe="") if text not in (".", "..") else text.replace(".", "%2E")

    return _PLACEHOLDER.sub(replace, template)


def render_value(template: Any, scope: Scope) -> Any:
    """A body template: strings rendered, and a string that is one ``{{ … }}`` keeps its type
    (a number stays a number, null clears); optional missing values drop their key."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template.strip())
        if whole is None:
            return render_text(template, scope)
        expr = parse_expr(whole.group(1))
        value = evaluate(expr, scope)
        if value is MISSING:
            if expr.optional:
                return _OMIT
            raise TemplateError(f"no value for {expr.path}")
        return value
    if isinstance(template, dict):
        rendered = {str(k): render_value(v, scope) for k, v in template.items()}
        return {k: v for k, v in rendered.items() if v is not _OMIT}
    if isinstance(template, list):
        return [v for v in (render_value(item, scope) for item in template) if v is not _OMIT]
    return template


def _templates(value: Any) -> list[str]:
    if isinstance(value, str):
        return [m.group(1) for m in _PLACEHOLDER.finditer(value)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _templates(v)]
    if isinstance(value, list):
        return [t for v in value for t in _templates(v)]
    return []


# -- the spec ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Answers matching ``status`` (``409``, ``"4xx"``), ``contains`` and ``match`` → outcome."""

    outcome: str
    status: tuple[str, ...] = ()
    contains: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    category: Category = Category.provisioning
    message: str = ""

    def matches(self, status: int, text: str, doc: Any) -> bool:
        code = str(status)
        if self.status and not any(
            p == code or (len(p) == 3 and p.endswith("xx") and p[0] == code[0]) for p in self.status
        ):
            return False
        if self.contains is not None and self.contains not in text:
            return False
        return all(extract(doc, path) == value for path, value in self.match.items())


@dataclass(frozen=True)
class RequestSpec:
    """One request of the target: ``name`` is ``lookup``, ``create_account`` or an intent kind."""

    name: str
    method: str
    url: str
    body: Any = None
    encoding: str = "json"
    headers: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    items: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    responses: tuple[Rule, ...] = ()
    error_message: tuple[str, ...] = DEFAULT_MESSAGES
    maps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthSpec:
    type: str = "none"
    token_url: str | None = None
    scope: str | None = None
    client_auth: str = "basic"
    header: str = "Authorization"
    prefix: str = "Bearer"


@dataclass(frozen=True)
class RestSpec:
    auth: AuthSpec
    headers: dict[str, str]
    timeout: float
    requests: dict[str, RequestSpec]


def _unknown(keys: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> list[str]:
    problems = []
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
            problems.append(f"{where}: unknown key {key!r} ({hint})")
    return problems


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def _rules(raw: Any, where: str, problems: list[str]) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{where}: a list of {{status, contains, match, outcome, category}}")
        return ()
    rules = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{at}: a rule is a mapping")
            continue
        problems += _unknown(item, RULE_KEYS, at)
        outcome = item.get("outcome")
        if outcome not in OUTCOMES:
            problems.append(f"{at}: outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
            continue
        statuses = _strings(item.get("status"))
        for pattern in statuses:
            if not re.fullmatch(r"[1-5](?:\d\d|xx)", pattern):
                problems.append(f"{at}: status {pattern!r} is not a code like 409 or 4xx")
        category = Category.provisioning
        if "category" in item:
            try:
                category = Category(item["category"])
            except ValueError:
                problems.append(
                    f"{at}: category must be one of {', '.join(Category)}, not {item['category']!r}"
                )
        match = item.get("match") or {}
        if not isinstance(match, dict):
            problems.append(f"{at}: match is a mapping of JSON path → value")
            match = {}
        contains = item.get("contains")
        rules.append(
            Rule(
                outcome=outcome,
                status=statuses,
                contains=str(contains) if contains is not None else None,
                match=match,
                category=category,
                message=str(item.get("message") or ""),
            )
        )
    return tuple(rules)


def _request(
    name: str,
    raw: Any,
    shared: tuple[Rule, ...],
    messages: tuple[str, ...],
    maps: Mapping[str, Mapping[str, Any]],
    problems: list[str],
) -> RequestSpec | None:
    if not isinstance(raw, dict):
        problems.append(f"{name}: a request is a mapping with method and url")
        return None
    problems += _unknown(raw, LOOKUP_KEYS if name == "lookup" else REQUEST_KEYS, name)
    method = str(raw.get("method", "GET" if name == "lookup" else "POST")).upper()
    if method not in METHODS:
        problems.append(f"{name}.method: one of {', '.join(METHODS)}, not {method!r}")
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith("/"):
        problems.append(
            f"{name}.url: a path template under base_url, like /users/{{{{ lms_user_id }}}}"
        )
        url = "/"
    encoding = raw.get("encoding", "json")
    if encoding not in ("json", "form"):
        problems.append(f"{name}.encoding: json or form, not {encoding!r}")
    headers = raw.get("headers") or {}
    match = raw.get("match") or {}
    for key, value in (("headers", headers), ("match", match)):
        if not isinstance(value, dict):
            problems.append(f"{name}.{key}: a mapping")
    if name == "lookup" and raw.get("id") is None:
        problems.append("lookup.id: where the account id is in each found item, like user_id")
    for key in ("id", "items"):
        if raw.get(key) is not None and not _PATH.fullmatch(str(raw[key])):
            problems.append(f"{name}.{key}: not a JSON path like $.data.id: {raw[key]!r}")
    templated = {"url": url, "body": raw.get("body"), "headers": headers, "match": match}
    for where, value in templated.items():
        for text in _templates(value):
            try:
                expr = parse_expr(text)
            except TemplateError as exc:
                problems.append(f"{name}.{where}: {exc}")
                continue
            for filter_name, argument in expr.filters:
                if filter_name == "map" and str(argument) not in maps:
                    problems.append(f"{name}.{where}: no map {argument!r} under `maps`")
    return RequestSpec(
        name=name,
        method=method,
        url=url,
        body=raw.get("body"),
        encoding=str(encoding),
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
        id=str(raw["id"]) if raw.get("id") is not None else None,
        items=str(raw["items"]) if raw.get("items") is not None else None,
        match=match if isinstance(match, dict) else {},
        responses=_rules(raw.get("responses"), f"{name}.responses", problems) + shared,
        error_message=_strings(raw.get("error_message")) or messages,
        maps=maps,
    )


def parse_options(options: Mapping[str, Any]) -> tuple[RestSpec, list[str]]:
    """The target's options as a RestSpec, and every problem found (empty: usable)."""
    problems: list[str] = []
    if not isinstance(options, Mapping):
        return RestSpec(AuthSpec(), {}, 30.0, {}), ["options: a mapping"]
    problems += _unknown(options, OPTION_KEYS, "options")
    raw_auth = options.get("auth") or {"type": "none"}
    auth = AuthSpec()
    if not isinstance(raw_auth, dict) or raw_auth.get("type") not in AUTH_KEYS:
        problems.append(f"auth.type: one of {', '.join(AUTH_KEYS)}")
    else:
        kind = str(raw_auth["type"])
        problems += _unknown(raw_auth, AUTH_KEYS[kind], "auth")
        if kind == "oauth2" and not raw_auth.get("token_url"):
            problems.append(
                "auth.token_url: oauth2 needs the token endpoint (absolute or under base_url)"
            )
        if raw_auth.get("client_auth", "basic") not in ("basic", "post"):
            problems.append("auth.client_auth: basic or post")
        auth = AuthSpec(
            type=kind,
            token_url=raw_auth.get("token_url"),
            scope=raw_auth.get("scope"),
            client_auth=str(raw_auth.get("client_auth", "basic")),
            header=str(raw_auth.get("header", "Authorization")),
            prefix=str(raw_auth.get("prefix", "Bearer")),
        )
    raw_maps = options.get("maps") or {}
    maps: dict[str, dict[str, Any]] = {}
    if isinstance(raw_maps, dict) and all(isinstance(v, dict) for v in raw_maps.values()):
        maps = {str(n): {str(k): v for k, v in table.items()} for n, table in raw_maps.items()}
    else:
        problems.append("maps: a mapping of name → {value: LMS value}")
    shared = _rules(options.get("responses"), "responses", problems)
    messages = _strings(options.get("error_message")) or DEFAULT_MESSAGES
    requests = {}
    for name in REQUESTS:
        if name in options:
            spec = _request(name, options[name], shared, messages, maps, problems)
            if spec is not None:
                requests[name] = spec
    if "create_account" not in requests:
        problems.append("create_account: missing: every upsert_account would be a dead letter")
    elif requests["create_account"].id is None and "lookup" not in requests:
        problems.append("create_account.id: without it (or a lookup) accounts cannot be linked")
    headers = options.get("headers") or {}
    if not isinstance(headers, dict):
        problems.append("headers: a mapping of header → value")
        headers = {}
    timeout = options.get("timeout", 30.0)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        problems.append("timeout: seconds, a positive number")
        timeout = 30.0
    static = {str(k): str(v) for k, v in headers.items()}
    return RestSpec(auth, static, float(timeout), requests), problems


def validate_options(
    options: Mapping[str, Any], credentials: Collection[str] | None = None
) -> list[str]:
    """Human-readable problems of a rest target's options (``bridge rules check``).

    ``credentials``: the credential names targets.yaml gives, to check the auth has its own.
    """
    spec, problems = parse_options(options)
    if credentials is not None:
        for name in AUTH_CREDENTIALS.get(spec.auth.type, ()):
            if name not in credentials:
                problems.append(f"credentials: auth {spec.auth.type} needs a credential {name!r}")
    return problems


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
        return [(prefix, "" if value is None else _text(value))]
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


def _parse(body: bytes | str | None) -> tuple[str, Any]:
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
            value = "; ".join(_text(v) for v in value)
        if value not in (MISSING, None, ""):
            return _text(value)[:500]
    return " ".join(text.split())[:300]


def classify(
    spec: RequestSpec, status: int, headers: Mapping[str, str], body: bytes | str | None
) -> Result:
    """What an answer means: the spec's rules first, then the defaults (module docstring)."""
    text, doc = _parse(body)
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
    category = Category.provisioning
    if status in (400, 409, 422):
        category = Category.data_quality
    elif status == 404 and spec.name in ("enrol", "add_cohort_member"):
        category = Category.mapping
    return _outcome(spec, "permanent", status, headers, doc, said, category)


def _outcome(
    spec: RequestSpec,
    outcome: str,
    status: int,
    headers: Mapping[str, str],
    doc: Any,
    said: str,
    category: Category = Category.provisioning,
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
    _, doc = _parse(body)
    items = extract(doc, spec.items) if spec.items else [doc]
    if not isinstance(items, list):
        items = [] if items is MISSING or items is None else [items]
    scope = scope_for(delivery, maps=spec.maps)
    wanted = {path: render_value(value, scope) for path, value in spec.match.items()}

    def same(a: Any, b: Any) -> bool:
        return _text(a).casefold() == _text(b).casefold()

    for item in items:
        if all(same(extract(item, path), value) for path, value in wanted.items()):
            found = extract(item, spec.id or "id")
            if found not in (MISSING, None, "") and not isinstance(found, dict | list):
                return str(found)
    return None


# -- the target (thin shell) --------------------------------------------------------------------


class _HeaderToken(httpx.Auth):
    def __init__(self, header: str, value: str) -> None:
        self.header, self.value = header, value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = self.value
        yield request


def build_auth(
    auth: AuthSpec,
    credentials: Mapping[str, str],
    base_url: str,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    name: str = "",
) -> httpx.Auth | None:
    """The httpx.Auth an ``auth`` spec describes, with the target's credentials."""
    needed = [key for key in AUTH_CREDENTIALS[auth.type] if not credentials.get(key)]
    if needed:
        raise RestConfigError(
            name, [f"auth {auth.type} needs the credential(s) {', '.join(needed)}"]
        )
    if auth.type == "bearer":
        value = f"{auth.prefix} {credentials['token']}".strip()
        return _HeaderToken(auth.header, value)
    if auth.type == "basic":
        return httpx.BasicAuth(credentials["username"], credentials.get("password", ""))
    if auth.type == "oauth2":
        assert auth.token_url is not None
        return ClientCredentials(
            urljoin(base_url.rstrip("/") + "/", auth.token_url.lstrip("/"))
            if not auth.token_url.startswith(("http://", "https://"))
            else auth.token_url,
            credentials["client_id"],
            credentials["client_secret"],
            scope=auth.scope,
            client_auth=auth.client_auth,
            transport=transport,
        )
    return None


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
                else Result.dead(Category.provisioning, str(exc))
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
                Category.mapping,
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
            return Result.dead(Category.provisioning, "no account in the LMS for this person yet")
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
