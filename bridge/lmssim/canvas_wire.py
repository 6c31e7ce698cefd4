"""How the simulated Canvas reads and writes HTTP, as canvas-lms (Rails) does: ``sis_*:`` /
``hex:`` ids, Rack's nested parameters, ActiveModel error bodies and opaque page bookmarks
(``lib/api.rb``, ``users_controller``, BookmarkedCollection).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import urlencode

from starlette.requests import Request

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SIS_ID = re.compile(r"^(sis_[a-z_]+):(.+)$", re.DOTALL)


class NotFound(Exception):
    """Canvas's ActiveRecord::RecordNotFound: 404 with the generic message."""


class Refused(Exception):
    """An answer other than 200, with Canvas's body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def last_name_first(name: str) -> str:
    """Canvas's inferred sortable name: "Jane Smith" → "Smith, Jane"."""
    first, _, last = name.strip().rpartition(" ")
    return f"{last}, {first}" if first else last


def valid_email(address: str) -> bool:
    return bool(_EMAIL.match(address))


def parse_id(ref: str) -> tuple[str, str]:
    """``12`` → ("id", "12"); ``sis_user_id:E1`` / ``hex:sis_user_id:4531`` → ("sis_user_id", "E1")."""
    ref = ref.strip()
    if ref.startswith("hex:"):
        found = _SIS_ID.match(ref[4:])
        if found is None:
            return "", ""
        try:
            return found.group(1), bytes.fromhex(found.group(2)).decode()
        except (ValueError, UnicodeDecodeError):
            return "", ""
    found = _SIS_ID.match(ref)
    if found is not None:
        return found.group(1), found.group(2)
    return ("id", ref) if ref.isdigit() else ("", "")


# Request parameters: Rails merges the query string and the body, form-encoded or JSON.


def nest(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Rack's nested keys: ``user[name]=x`` → {"user": {"name": "x"}}, ``state[]=a`` → a list."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head, *re.findall(r"([^\[\]]*)\]", "[" + rest)] if rest else [head]
        node = out
        for index, part in enumerate(parts[:-1]):
            if parts[index + 1] == "" and index + 2 == len(parts):
                listed = node.get(part)
                node[part] = [*listed, value] if isinstance(listed, list) else [value]
                break
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        else:
            node[parts[-1]] = value
    return out


def section(params: dict[str, Any], key: str) -> dict[str, Any]:
    """``params[key]`` when it is a nested group (``user[...]``), else an empty one."""
    found = params.get(key)
    return found if isinstance(found, dict) else {}


def truthy(value: Any) -> bool:
    """Canvas's ``value_to_boolean``."""
    return str(value).strip().lower() in {"1", "true", "t", "yes", "y", "on"}


def listed(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


async def parameters(request: Request) -> dict[str, Any]:
    params = nest(request.query_params.multi_items())
    raw = await request.body()
    if not raw:
        return params
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise Refused(400, {"errors": [{"message": "Invalid JSON body"}]}) from exc
        if isinstance(body, dict):
            params.update(body)
        return params
    if kind.startswith("multipart/"):  # Canvas takes -F too; python-multipart is not a dependency
        raise Refused(415, {"errors": [{"message": "multipart bodies are not simulated"}]})
    params.update(nest(parse_qsl(raw.decode(), keep_blank_values=True)))
    return params


def field_errors(**fields: tuple[str, str]) -> dict[str, Any]:
    """ActiveModel errors as Canvas renders them: {field: [{attribute, type, message}]}."""
    return {
        name: [{"attribute": name, "type": kind, "message": message}]
        for name, (kind, message) in fields.items()
    }


def create_errors(pseudonym: dict[str, Any]) -> dict[str, Any]:
    """users_controller#create_user's 400 body."""
    return {
        "errors": {
            "user": {},
            "pseudonym": pseudonym,
            "observee": {},
            "pairing_code": {},
            "recaptcha": None,
        }
    }


# Bookmarked pagination (Canvas's BookmarkedCollection): the page token is opaque to clients.


def bookmark(key: tuple[str, str, int]) -> str:
    return "bookmark:" + base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def unbookmark(page: str | None) -> tuple[str, str, int] | None:
    if not page or not page.startswith("bookmark:"):
        return None
    try:
        kind, name, ident = json.loads(base64.urlsafe_b64decode(page[9:].encode()))
        return str(kind), str(name), int(ident)
    except (ValueError, TypeError, binascii.Error):
        return None


def per_page(params: dict[str, Any]) -> int:
    """Canvas's ``per_page``: 10 unless given, at most 100 (``Api.per_page``)."""
    try:
        return min(max(int(params.get("per_page") or 10), 1), 100)
    except (TypeError, ValueError):
        return 10


def page_links(
    base: str, kept: list[tuple[str, str]], current: str, following: str | None, size: int
) -> str:
    """The ``Link`` header of one page: current, next (when there is more) and first."""

    def link(token: str, rel: str) -> str:
        query = urlencode([*kept, ("page", token), ("per_page", str(size))])
        return f'<{base}{query}>; rel="{rel}"'

    found = [link(current, "current")]
    if following is not None:
        found.append(link(following, "next"))
    found.append(link("first", "first"))
    return ",".join(found)
