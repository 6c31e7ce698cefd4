"""HR feeds: where people come from besides SCIM, declared in ``feeds.yaml`` next to the rules.

A feed is an HRIS that pushes signed webhooks (``POST /hris/v1/events/{feed}``) and nightly
full exports (``bridge sync``). Its declaration says how to check a webhook's signature (the
secrets by environment variable name, several for rotation), and how one HR record — a
webhook's ``data`` object or one export row — becomes a SCIM User, with the rules'
transforms (``bridge.rules.transforms``)::

    feeds:
      workday:
        signature: standard-webhooks        # or sha256 (the guide's `sha256=<hex>` header)
        secrets: [env:HRIS_WEBHOOK_SECRET, env:HRIS_WEBHOOK_SECRET_PREVIOUS]
        tolerance: 5m                       # webhook-timestamp skew accepted (default 5m)
        export:                             # bridge sync, uploads, and the schedule:
          format: csv
          min_percent: 90                   # under 90 % of the last export: refused
          source: https://hris.example.com/exports/people.csv   # or a file path
          token: env:HRIS_EXPORT_TOKEN      # a bearer token for a URL source
          schedule: {at: "01:30"}           # job `sync`: fetched and synced by the bridge
          timezone: Europe/Berlin
        mapping:                            # SCIM attribute ← HR record field
          externalId: {from: [employee_id, externalId], required: true}
          userName: {from: email, transforms: [trim, lower], required: true}
          emails.work: {from: email, transforms: [trim, lower]}
          name.givenName: {from: first_name}
          name.familyName: {from: last_name}
          title: {from: job_title}
          department: {from: department}
          roleCodes: {from: role_codes, transforms: [{split: ";"}]}

Pure: parsing reports every problem with file:line:col and a hint (``RuleError``);
``to_scim_user`` turns one record into a SCIM User document.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

from bridge.rules import schedule_nodes
from bridge.rules.model import FieldMapping
from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.rules.transforms import TransformError
from bridge.rules.transforms import apply
from bridge.schedule import Job
from bridge.schedule import parse_job
from bridge.schedule import zone_problem

if TYPE_CHECKING:  # the loader imports this module: its Node only annotates here
    from bridge.rules.loader import Node

FEEDS_FILE = "feeds.yaml"
"""The file of a rules directory that declares the HR feeds (not a rule file)."""

SCHEMES = ("standard-webhooks", "sha256")
"""Webhook signatures: Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``) and the guide's
``X-Signature: sha256=<hex HMAC-SHA256 of the raw body>``."""
FORMATS = ("csv", "jsonl")
FEED_KEYS = ("signature", "secrets", "tolerance", "mapping", "export", "fetch")
EXPORT_KEYS = ("format", "min_percent", "delimiter", "source", "token", "schedule", "timezone")
FETCH_KEYS = ("url", "token")
MAPPING_KEYS = ("from", "value", "transforms", "required")
DEFAULT_TOLERANCE = timedelta(minutes=5)

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
ATTRIBUTES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "externalId": (None, ("externalId",)),
    "userName": (None, ("userName",)),
    "displayName": (None, ("displayName",)),
    "title": (None, ("title",)),
    "active": (None, ("active",)),
    "name.givenName": (None, ("name", "givenName")),
    "name.familyName": (None, ("name", "familyName")),
    "emails.work": (None, ("emails",)),
    "department": (ENTERPRISE, ("department",)),
    "employeeNumber": (ENTERPRISE, ("employeeNumber",)),
    "manager": (ENTERPRISE, ("manager", "value")),
    "roleCodes": (HR, ("roleCodes",)),
    "employmentStatus": (HR, ("employmentStatus",)),
    "hireDate": (HR, ("hireDate",)),
    "terminationDate": (HR, ("terminationDate",)),
}
"""The SCIM attributes a feed may set, by the short name a feed's mapping uses: (schema
extension or None for core, path inside it). ``emails.work`` is the work email."""

_DURATION = re.compile(r"^(\d+)\s*(s|m|h)$")
_ENV = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class ExportSpec:
    """How a full export of the feed is read: CSV (with a header row) or JSON lines, and the
    share of the last export's people under which a new export is refused as truncated."""

    format: str = "csv"
    min_percent: float = 90.0
    delimiter: str = ","
    source: str | None = None
    """Where the schedule reads the export: a file path (relative to the rules directory) or
    an ``https://`` URL (``http://`` only for a loopback host)."""
    token: str | None = None
    """The environment variable holding the bearer token for a URL ``source``."""
    schedule: Job | None = None
    """When the bridge itself syncs ``source`` (job ``sync``); None: only ``bridge sync`` and
    uploads."""


@dataclass(frozen=True)
class Feed:
    """One HRIS feed of ``feeds.yaml``."""

    name: str
    signature: str
    secrets: tuple[str, ...]
    """Environment variable names, newest first: any of them verifies a webhook (rotation)."""
    mapping: tuple[FieldMapping, ...]
    tolerance: timedelta = DEFAULT_TOLERANCE
    export: ExportSpec = field(default_factory=ExportSpec)
    fetch_url: str | None = None
    """Where a thin event (an id only) is completed: a URL with ``{externalId}``."""
    fetch_token: str | None = None
    """The environment variable holding the HRIS API's bearer token."""
    mark: Mark = field(default=Mark(""), compare=False)

    def secret_values(self, env: Mapping[str, str]) -> list[bytes]:
        """The secrets that are set, newest first."""
        return [env[name].encode() for name in self.secrets if env.get(name)]


class RecordError(ValueError):
    """An HR record that cannot become a SCIM User: the field and what to fix in the HRIS."""


def parse_duration(text: str) -> timedelta | None:
    """``30s``, ``5m``, ``1h`` as a timedelta; None when it is not one."""
    found = _DURATION.match(text.strip())
    if found is None:
        return None
    amount, unit = int(found.group(1)), found.group(2)
    return timedelta(seconds=amount * {"s": 1, "m": 60, "h": 3600}[unit])


def _unknown(node: Node, allowed: tuple[str, ...], where: str, errors: list[RuleError]) -> None:
    for key, child in node.value.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
            errors.append(
                RuleError(child.mark, f"unknown key {key!r} in {where}", text=key, hint=hint)
            )


SOURCES = " | "
"""How a mapping's alternative fields are kept in ``FieldMapping.source`` (first found wins)."""


def _sources(node: Node | None) -> list[str]:
    """``from: field`` or ``from: [field, other]`` (an export's column and a webhook's key)."""
    if node is None:
        return []
    items = node.value if isinstance(node.value, list) else [node]
    return [str(item.value) for item in items if isinstance(item.value, str) and item.value]


def _mapping(node: Node | None, feed: str, errors: list[RuleError]) -> tuple[FieldMapping, ...]:
    from bridge.rules.loader import _transforms

    if node is None or not isinstance(node.value, dict) or not node.value:
        where = node.mark if node is not None else Mark("")
        errors.append(
            RuleError(
                where,
                f"feed {feed!r} needs a `mapping:` of SCIM attribute ← HR record field",
                hint="externalId: {from: employee_id, required: true}",
            )
        )
        return ()
    out = []
    for attribute, child in node.value.items():
        if attribute not in ATTRIBUTES:
            close = difflib.get_close_matches(attribute, list(ATTRIBUTES), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(ATTRIBUTES)}"
            errors.append(
                RuleError(child.mark, f"a feed cannot set {attribute!r}", text=attribute, hint=hint)
            )
            continue
        if isinstance(child.value, str):
            out.append(FieldMapping(attribute, child.value, mark=child.mark))
            continue
        if not isinstance(child.value, dict):
            errors.append(
                RuleError(child.mark, f"mapping {attribute!r}: a field name or {{from: …}}")
            )
            continue
        _unknown(child, MAPPING_KEYS, f"mapping {attribute!r}", errors)
        source = child.value.get("from")
        value = child.value.get("value")
        sources = _sources(source)
        if not sources and value is None:
            errors.append(
                RuleError(
                    child.mark,
                    f"mapping {attribute!r} needs `from:` (a field of the HR record, or a list "
                    "of them: the first one the record has) or `value:`",
                    hint="from: employee_id  or  from: [employee_id, externalId]",
                )
            )
            continue
        required = child.value.get("required")
        out.append(
            FieldMapping(
                attribute,
                SOURCES.join(sources) if sources else None,
                value=value.plain() if value is not None else None,
                transforms=_transforms(child.value.get("transforms"), errors),
                required=bool(required.value) if required is not None else False,
                mark=child.mark,
            )
        )
    if "externalId" not in {m.attribute for m in out}:
        errors.append(
            RuleError(
                node.mark,
                f"feed {feed!r} maps no externalId: people could not be matched across events",
                hint="externalId: {from: employee_id, required: true}",
            )
        )
    return tuple(out)


def _secrets(node: Node | None, feed: str, errors: list[RuleError]) -> tuple[str, ...]:
    items = [] if node is None else (node.value if isinstance(node.value, list) else [node])
    names = []
    for item in items:
        found = _ENV.match(str(item.value)) if isinstance(item.value, str) else None
        if found is None:
            errors.append(
                RuleError(
                    item.mark,
                    f"feed {feed!r}: a secret is named by its environment variable",
                    text=str(item.value),
                    hint="secrets: [env:HRIS_WEBHOOK_SECRET] — never the secret itself",
                )
            )
            continue
        names.append(found.group(1))
    if not names and node is not None and not errors:
        errors.append(RuleError(node.mark, f"feed {feed!r} lists no secret"))
    return tuple(names)


def _feed(name: str, node: Node, errors: list[RuleError]) -> Feed | None:
    if not isinstance(node.value, dict):
        errors.append(RuleError(node.mark, f"feed {name!r} must be a mapping"))
        return None
    _unknown(node, FEED_KEYS, f"feed {name!r}", errors)
    values = node.value
    scheme_node = values.get("signature")
    scheme = str(scheme_node.value) if scheme_node is not None else "standard-webhooks"
    if scheme not in SCHEMES:
        errors.append(
            RuleError(
                scheme_node.mark if scheme_node else node.mark,
                f"feed {name!r}: unknown signature {scheme!r}",
                text=scheme,
                hint=f"one of {', '.join(SCHEMES)}",
            )
        )
    secrets = _secrets(values.get("secrets"), name, errors)
    if "secrets" not in values:
        errors.append(
            RuleError(
                node.mark,
                f"feed {name!r} needs `secrets:` to check webhook signatures",
                hint="secrets: [env:HRIS_WEBHOOK_SECRET]",
            )
        )
    tolerance = DEFAULT_TOLERANCE
    if "tolerance" in values:
        raw = values["tolerance"]
        parsed = parse_duration(str(raw.value)) if isinstance(raw.value, str) else None
        if parsed is None or parsed <= timedelta(0):
            errors.append(
                RuleError(raw.mark, "tolerance is a duration like 5m or 300s", text=str(raw.value))
            )
        else:
            tolerance = parsed
    export = ExportSpec()
    if "export" in values:
        export_node = values["export"]
        if not isinstance(export_node.value, dict):
            errors.append(RuleError(export_node.mark, "export: {format: csv, min_percent: 90}"))
        else:
            _unknown(export_node, EXPORT_KEYS, "export", errors)
            fields = export_node.value
            fmt = str(fields["format"].value) if "format" in fields else "csv"
            if fmt not in FORMATS:
                errors.append(
                    RuleError(fields["format"].mark, f"export format: one of {', '.join(FORMATS)}")
                )
            percent: Any = fields["min_percent"].value if "min_percent" in fields else 90
            if isinstance(percent, bool) or not isinstance(percent, int | float):
                percent = -1
            if not 0 <= percent <= 100:
                errors.append(
                    RuleError(fields["min_percent"].mark, "min_percent: a number from 0 to 100")
                )
                percent = 90
            delimiter = str(fields["delimiter"].value) if "delimiter" in fields else ","
            if len(delimiter) != 1:
                errors.append(RuleError(fields["delimiter"].mark, "delimiter: one character"))
                delimiter = ","
            source, token, job = _export_source(name, export_node, errors)
            export = ExportSpec(fmt, float(percent), delimiter, source, token, job)
    fetch_url = fetch_token = None
    if "fetch" in values:
        fetch = values["fetch"]
        if not isinstance(fetch.value, dict) or "url" not in fetch.value:
            errors.append(
                RuleError(fetch.mark, "fetch: {url: https://…/workers/{externalId}, token: env:X}")
            )
        else:
            _unknown(fetch, FETCH_KEYS, "fetch", errors)
            fetch_url = str(fetch.value["url"].value)
            if "{externalId}" not in fetch_url:
                errors.append(
                    RuleError(
                        fetch.value["url"].mark,
                        "fetch.url must contain {externalId}",
                        text=fetch_url,
                        hint="https://hris.example.com/api/workers/{externalId}",
                    )
                )
            if "token" in fetch.value:
                names = _secrets(fetch.value["token"], name, errors)
                fetch_token = names[0] if names else None
    mapping = _mapping(values.get("mapping"), name, errors)
    return Feed(
        name,
        scheme,
        secrets,
        mapping,
        tolerance,
        export,
        fetch_url,
        fetch_token,
        node.mark,
    )


def _export_source(
    feed: str, node: Node, errors: list[RuleError]
) -> tuple[str | None, str | None, Job | None]:
    """``export.source`` / ``token`` / ``schedule`` / ``timezone``: where and when the bridge
    fetches the feed's full export itself."""
    fields = node.value
    source = token = job = None
    if "source" in fields:
        source = str(fields["source"].value or "").strip() or None
        if source is None:
            errors.append(RuleError(fields["source"].mark, "export.source is empty"))
        elif source.startswith("http://") and not _loopback(source):
            errors.append(
                RuleError(
                    fields["source"].mark,
                    f"feed {feed!r}: an export over plain http would carry people's data "
                    "unencrypted",
                    text=source,
                    hint="use an https:// URL (http:// is accepted only for localhost)",
                )
            )
    if "token" in fields:
        names = _secrets(fields["token"], feed, errors)
        token = names[0] if names else None
        if source is not None and not source.startswith(("http://", "https://")):
            errors.append(
                RuleError(
                    fields["token"].mark,
                    "export.token is for a URL source; a file source has no token",
                    hint="remove token:, or make source an https:// URL",
                )
            )
    if "schedule" in fields:
        timezone = "UTC"
        if "timezone" in fields:
            wrong = zone_problem(fields["timezone"].value)
            if wrong is not None:
                schedule_nodes.report(node, [wrong], errors)  # at export.timezone
            else:
                timezone = str(fields["timezone"].value)
        schedule = fields["schedule"]
        job, problems = parse_job("sync", schedule_nodes.plain(schedule), timezone)
        schedule_nodes.report(schedule, problems, errors)
        if source is None:
            errors.append(
                RuleError(
                    schedule.mark,
                    f"feed {feed!r}: export.schedule needs export.source (what to read)",
                    hint="source: /srv/hris/workday.csv or https://hris.example.com/export.csv",
                )
            )
    elif "timezone" in fields:
        errors.append(RuleError(fields["timezone"].mark, "export.timezone is for export.schedule"))
    return source, token, job


def _loopback(url: str) -> bool:
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return host in ("localhost", "127.0.0.1", "[::1]")


def parse_feeds(root: Node, errors: list[RuleError]) -> dict[str, Feed]:
    """``feeds.yaml``'s ``feeds:`` mapping, every problem reported in ``errors``."""
    if not isinstance(root.value, dict) or "feeds" not in root.value:
        errors.append(RuleError(root.mark, "feeds.yaml needs a `feeds:` mapping of name → feed"))
        return {}
    _unknown(root, ("feeds",), "feeds.yaml", errors)
    node = root.value["feeds"]
    if not isinstance(node.value, dict):
        errors.append(RuleError(node.mark, "`feeds:` is a mapping of name → feed"))
        return {}
    found = {}
    for name, child in node.value.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
            errors.append(
                RuleError(
                    child.mark,
                    f"feed name {name!r}: lowercase letters, digits, - and _ (it is in a URL)",
                    text=name,
                )
            )
            continue
        feed = _feed(name, child, errors)
        if feed is not None:
            found[name] = feed
    return found


# -- one HR record → a SCIM User (pure) ----------------------------------------------------------


def record_value(record: Mapping[str, Any], path: str) -> Any:
    """A field of an HR record: ``email`` or a dotted path into nested JSON (``data.email``)."""
    value: Any = record
    for step in path.split("."):
        if not isinstance(value, Mapping) or step not in value:
            return None
        value = value[step]
    return None if value == "" else value


def _as_text(value: Any) -> Any:
    """A number of an HR record as SCIM's string (JSON HRIS exports give ``employee_id:
    12345``; SCIM's externalId, userName and the HR codes are strings)."""
    if isinstance(value, list):
        return [_as_text(item) for item in value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def to_scim_user(feed: Feed, record: Mapping[str, Any]) -> dict[str, Any]:
    """The SCIM User an HR record describes (only the attributes the feed maps and the record
    has). RecordError names the field when a required one is missing or a transform refuses
    its value."""
    user: dict[str, Any] = {"schemas": [USER]}
    for item in feed.mapping:
        value, source = item.value, None
        for source in item.source.split(SOURCES) if item.source is not None else ():
            value = record_value(record, source)
            if value is not None:
                break
        try:
            for step in item.transforms:
                value = apply(value, step.name, step.argument)
        except TransformError as exc:
            raise RecordError(f"{source or item.attribute}: {exc}") from exc
        if value is None or value == "" or value == []:
            if item.required:
                raise RecordError(
                    f"{item.source.replace(SOURCES, ' or ') if item.source else item.attribute}: "
                    f"missing, and {item.attribute} needs it "
                    f"(fill it in the HRIS for this person)"
                )
            continue
        schema, path = ATTRIBUTES[item.attribute]
        if item.attribute != "active":
            value = _as_text(value)
        if item.attribute == "emails.work":
            value = [{"value": value, "type": "work", "primary": True}]
        if item.attribute == "roleCodes" and isinstance(value, str):
            value = [value]
        if item.attribute == "active" and isinstance(value, str):
            value = value.strip().lower() in ("true", "1", "yes", "active")
        holder = user
        if schema is not None:
            holder = user.setdefault(schema, {})
            if schema not in user["schemas"]:
                user["schemas"].append(schema)
        for key in path[:-1]:
            holder = holder.setdefault(key, {})
        holder[path[-1]] = value
    return user
