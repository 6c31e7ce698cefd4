"""The ``rest`` target's spec: its ``options`` from targets.yaml parsed into a ``RestSpec``.

``parse_options`` returns every problem it finds (for ``bridge rules check``) rather than
stopping at the first; the keys are described in ``bridge.targets.rest``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from bridge.targets.base import Category
from bridge.targets.templates import TemplateError
from bridge.targets.templates import extract
from bridge.targets.templates import is_path
from bridge.targets.templates import parse_expr
from bridge.targets.templates import placeholders

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
OPTION_KEYS = (
    "auth",
    "headers",
    "timeout",
    "maps",
    "responses",
    "error_message",
    *REQUESTS,
    "completion",
)
REQUEST_KEYS = ("method", "url", "headers", "body", "encoding", "id", "responses", "error_message")
LOOKUP_KEYS = (*REQUEST_KEYS, "items", "match")
COMPLETION_KEYS = (*REQUEST_KEYS, "state", "states", "started_at", "completed_at")
COMPLETION_STATES = ("not_started", "in_progress", "complete")
"""What a ``completion`` request's ``states`` map the LMS's words to (bridge.targets.completion)."""
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


@dataclass(frozen=True)
class Rule:
    """Answers matching ``status`` (``409``, ``"4xx"``), ``contains`` and ``match`` → outcome."""

    outcome: str
    status: tuple[str, ...] = ()
    contains: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    category: Category = Category.configuration
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
class CompletionSpec:
    """Where a ``rest`` LMS tells one learner's progress in one course (``completion:``).

    ``request`` is sent with ``ref`` = the course, ``lms_user_id`` and ``person`` as for an
    intent; ``state`` is the JSON path of the LMS's word for it, ``states`` maps each word the
    LMS uses to not_started | in_progress | complete; ``started_at`` / ``completed_at`` are
    optional paths of ISO-8601 or Unix times.
    """

    request: RequestSpec
    state: str
    states: dict[str, str]
    started_at: str | None = None
    completed_at: str | None = None


@dataclass(frozen=True)
class RestSpec:
    auth: AuthSpec
    headers: dict[str, str]
    timeout: float
    requests: dict[str, RequestSpec]
    completion: CompletionSpec | None = None


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
        category = Category.configuration
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
    keys = {"lookup": LOOKUP_KEYS, "completion": COMPLETION_KEYS}.get(name, REQUEST_KEYS)
    problems += _unknown(raw, keys, name)
    reads = name in ("lookup", "completion")
    method = str(raw.get("method", "GET" if reads else "POST")).upper()
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
        if raw.get(key) is not None and not is_path(str(raw[key])):
            problems.append(f"{name}.{key}: not a JSON path like $.data.id: {raw[key]!r}")
    templated = {"url": url, "body": raw.get("body"), "headers": headers, "match": match}
    for where, value in templated.items():
        for text in placeholders(value):
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
    completion = None
    if options.get("completion") is not None:
        completion = _completion(options["completion"], shared, messages, maps, problems)
    return RestSpec(auth, static, float(timeout), requests, completion), problems


def _completion(
    raw: Any,
    shared: tuple[Rule, ...],
    messages: tuple[str, ...],
    maps: Mapping[str, Mapping[str, Any]],
    problems: list[str],
) -> CompletionSpec | None:
    request = _request("completion", raw, shared, messages, maps, problems)
    if request is None:
        return None
    state = raw.get("state")
    if not isinstance(state, str) or not is_path(state):
        problems.append(
            "completion.state: the JSON path of the LMS's word for the learner's progress, "
            "like $.data.status"
        )
        state = "$"
    states = raw.get("states")
    table: dict[str, str] = {}
    if not isinstance(states, dict) or not states:
        problems.append(
            "completion.states: a mapping of each word the LMS answers → "
            + " | ".join(COMPLETION_STATES)
        )
    else:
        for word, meaning in states.items():
            if meaning not in COMPLETION_STATES:
                problems.append(
                    f"completion.states.{word}: one of {', '.join(COMPLETION_STATES)}, "
                    f"not {meaning!r}"
                )
            else:
                table[str(word)] = str(meaning)
    times = {}
    for key in ("started_at", "completed_at"):
        value = raw.get(key)
        if value is not None and not (isinstance(value, str) and is_path(value)):
            problems.append(f"completion.{key}: a JSON path like $.data.date_complete")
            value = None
        times[key] = value
    return CompletionSpec(request, state, table, times["started_at"], times["completed_at"])


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
