"""The process's log output: plain text or one JSON object per line, to stderr.

Every record, uvicorn's included (``uvicorn_log_config``), goes through one handler on the root
logger and one filter (``Redact``): bearer and ``brg_`` tokens, secrets passed as query
parameters and extra fields named like a secret never appear; emails appear masked
(``a***@example.com``); a record logged while a SCIM request runs carries its ``request_id``
and, once the request wrote, its ``journal_seq`` (``bridge.telemetry.LogContext``).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from datetime import UTC
from datetime import datetime
from typing import Any

from bridge.config import Settings
from bridge.telemetry import current_request

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

# An escaped quote before a URL-encoded address (``%22bob%40corp.example``) is kept as is.
_EMAIL = re.compile(
    r"((?:%[0-9A-Fa-f]{2})?)([A-Za-z0-9_+-])[A-Za-z0-9._+-]*(@|%40)([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
)
_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+|%20|\+)[A-Za-z0-9._~+/=-]+")
_TOKEN = re.compile(r"\bbrg_[A-Za-z0-9_-]+")
_QUERY_SECRET = re.compile(
    r"(?i)\b(wstoken|token|access_token|api_key|apikey|password|secret|signature)=[^&\s\"']+"
)
_SECRET_FIELD = re.compile(r"(?i)token|secret|password|authorization|api_?key|credential")
MASK = "***"


def redact(text: str) -> str:
    """``text`` with tokens and secrets replaced by ``***`` and emails masked."""
    # Each pattern runs only where its anchor occurs: most lines hold none (a request line).
    if "@" in text or "%40" in text:
        text = _EMAIL.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}{m.group(3)}{m.group(4)}", text)
    if "brg_" in text:
        text = _TOKEN.sub(f"brg_{MASK}", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", text)
    lowered = text.lower()
    if "bearer" in lowered or "basic" in lowered:
        text = _SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return text


@functools.cache
def _secret_field(name: str) -> bool:
    return _SECRET_FIELD.search(name) is not None


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: MASK if _secret_field(str(k)) else _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


class Redact(logging.Filter):
    """Redact every record before any formatter sees it; add the request it is about."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_request.get()
        if context is not None:
            if "request_id" not in record.__dict__:
                record.request_id = context.request_id
            if context.journal_seq is not None and "journal_seq" not in record.__dict__:
                record.journal_seq = context.journal_seq
        record.msg, record.args = redact(record.getMessage()), None
        for key in record.__dict__.keys() - _RESERVED:
            value = record.__dict__[key]
            if _secret_field(key):
                record.__dict__[key] = MASK
            elif isinstance(value, str | dict | list | tuple):
                record.__dict__[key] = _redacted(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields (request_id, journal_seq, status, ms) included."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info or record.exc_text:
            body["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(body, default=str)


def uvicorn_log_config(*, access_log: bool) -> dict[str, Any]:
    """uvicorn's ``log_config``: its loggers keep no handler of their own and propagate to the
    root's, so its lines take the process's format (JSON too) and pass ``Redact``.
    ``uvicorn.error`` says only warnings and errors (``bridge serve`` logs its own "listening
    on" line); ``uvicorn.access`` one line per request when ``access_log``."""
    quiet = {"handlers": [], "propagate": True, "level": "WARNING"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            "uvicorn": quiet,
            "uvicorn.error": quiet,
            "uvicorn.asgi": quiet,
            "uvicorn.access": {**quiet, "level": "INFO" if access_log else "WARNING"},
        },
    }


def configure_logging(settings: Settings) -> None:
    # Every request logs a line; neither format shows the caller's file and line, the thread
    # or the process, so the records skip finding them (the "Optimization" section of the
    # logging HOWTO): a third of what a log line costs.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Redact())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Libraries that configured a handler of their own (alembic's fileConfig does not run here,
    # uvicorn's is replaced by ``uvicorn_log_config``) would print past the format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # httpx logs every request at INFO; the relay's own lines say what an operator needs
    # (dead letters, retries, outages, recoveries, preflight verdicts).
    logging.getLogger("httpx").setLevel(logging.WARNING)
