"""``BRIDGE_LOG_FORMAT=json``: every line one JSON object, uvicorn's own lines included; a write's
lines carry its request id and journal seq; tokens never logged, emails masked.

The first test runs ``bridge serve`` as an operator would (a process of its own on a free port)
and reads what it wrote to stderr; the others log through ``configure_logging``'s real handler.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cli.logs import configure_logging
from bridge.cli.logs import redact
from bridge.config import Settings
from bridge.telemetry import LogContext
from bridge.telemetry import current_request
from tests.conftest import PATCH
from tests.conftest import ROOT
from tests.conftest import shipped_rules
from tests.conftest import user_payload

SCIM_TOKEN = "brg_serve-token-never-logged"
EMAIL = "grace.hopper@example.com"


class Serve:
    """``bridge serve --port 0`` in a process of its own; its stderr read line by line."""

    def __init__(self, database_url: str, rules: Path, cwd: Path) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "MOODLE_"))},
            "BRIDGE_DATABASE_URL": database_url,
            "BRIDGE_RULES": str(rules),
            "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
            "BRIDGE_LOG_FORMAT": "json",
            "BRIDGE_SCIM_TOKEN": SCIM_TOKEN,
            "CANVAS_TOKEN": "",
        }
        env.pop("CANVAS_TOKEN")
        command = "from bridge.cli import main; main()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", command, "serve", "--port", "0", "--access-log"],
            env=env,
            cwd=cwd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                seen = "".join(self.seen)
                raise AssertionError(f"no line matching {pattern!r} in:\n{seen}") from None
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def stop(self) -> list[str]:
        """Stop the server (SIGTERM, as an orchestrator does); every line it wrote."""
        self.process.terminate()
        self.process.wait(timeout=30)
        self.reader.join(timeout=10)  # the pipe is at its end once the process is gone
        assert self.process.stderr is not None
        self.process.stderr.close()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return [line for line in self.seen if line.strip()]


def test_serve_logs_one_json_object_per_line_with_masked_emails(
    database_url: str, tmp_path: Path
) -> None:
    serve = Serve(database_url, shipped_rules(tmp_path), tmp_path)
    try:
        base = serve.wait_for(r"listening on (http://[^ ]+) \(SCIM at ").group(1)
        auth = {"Authorization": f"Bearer {SCIM_TOKEN}"}
        with httpx.Client(base_url=f"{base}/scim/v2", headers=auth, timeout=30) as http:
            created = http.post(
                "/Users", json=user_payload(EMAIL, emails=[{"value": EMAIL, "type": "work"}])
            )
            assert created.status_code == 201, created.text
            patched = http.patch(
                f"/Users/{created.json()['id']}",
                json={
                    "schemas": [PATCH],
                    "Operations": [{"op": "replace", "path": "title", "value": "Admiral"}],
                },
                headers={"X-Request-Id": "req-patch-1"},
            )
            assert patched.status_code == 200, patched.text
            found = http.get("/Users", params={"filter": f'userName eq "{EMAIL}"'})
            assert found.json()["totalResults"] == 1
            assert httpx.get(f"{base}/readyz").status_code == 200
        serve.wait_for(r'"uvicorn\.access".*GET /readyz')
    finally:
        lines = serve.stop()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(
        isinstance(r, dict) and {"time", "level", "logger", "message"} <= set(r) for r in records
    )
    output = "".join(lines)
    assert SCIM_TOKEN not in output
    assert "grace.hopper" not in output
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.access", "bridge.scim", "bridge"} <= loggers
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any("g***" in r["message"] and "example.com" in r["message"] for r in access)
    writes = [r for r in records if r["logger"] == "bridge.scim" and r.get("journal_seq")]
    assert [r["message"].split()[0] for r in writes] == ["POST", "PATCH"]
    assert writes[1]["request_id"] == "req-patch-1"
    assert writes[1]["journal_seq"] > writes[0]["journal_seq"] >= 1
    # A target no rule file uses is no error, whatever its credentials.
    assert not [r for r in records if r["level"] == "error" and "canvas" in r["message"]], output
    assert any("canvas" in r["message"] and r["level"] == "info" for r in records)
    listening = [r for r in records if r["message"].startswith("listening on ")]
    assert listening and listening[0]["message"].endswith(
        "/scim/v2; probes at /healthz and /readyz)"
    )


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """``configure_logging`` for JSON, its handler (filter and formatter as configured) writing
    to a buffer instead of stderr; the root logger's handlers put back afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    configure_logging(Settings(log_format="json"))
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    root.handlers[:], root.level = saved, level


def records(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_tokens_and_secrets_are_never_logged(json_logs: io.StringIO) -> None:
    log = logging.getLogger("bridge.test")
    log.warning(
        "call to %s failed: Authorization: Bearer abc.def-ghi",
        "http://lms.test/webservice/rest/server.php?wstoken=s3cret&wsfunction=f",
        extra={"token": "brg_in-a-field", "detail": {"password": "hunter2", "note": "ok"}},
    )
    try:
        raise RuntimeError("the token brg_in-a-traceback was refused")
    except RuntimeError:
        log.exception("failed for %s", "ada@example.org")
    first, second = records(json_logs)
    text = json.dumps([first, second])
    for secret in ("abc.def-ghi", "s3cret", "brg_in-a-field", "hunter2", "brg_in-a-traceback"):
        assert secret not in text
    assert "wstoken=***&wsfunction=f" in first["message"]
    assert "Bearer ***" in first["message"]
    assert first["token"] == "***" and first["detail"] == {"password": "***", "note": "ok"}
    assert second["message"] == "failed for a***@example.org"
    assert "brg_***" in second["exception"]


def test_a_line_logged_during_a_request_carries_its_request_id_and_journal_seq(
    json_logs: io.StringIO,
) -> None:
    bound = current_request.set(LogContext("req-1"))
    try:
        logging.getLogger("bridge.provision").info("before the write")
        context = current_request.get()
        assert context is not None
        context.journal_seq = 42
        logging.getLogger("bridge.provision").info("after the write")
    finally:
        current_request.reset(bound)
    logging.getLogger("bridge.provision").info("outside any request")
    before, after, outside = records(json_logs)
    assert before["request_id"] == "req-1" and "journal_seq" not in before
    assert (after["request_id"], after["journal_seq"]) == ("req-1", 42)
    assert "request_id" not in outside


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("to ada.lovelace@example.com now", "to a***@example.com now"),
        ("filter=userName%20eq%20%22bob%40corp.example%22", "b***%40corp.example"),
        ("no email at all", "no email at all"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    ],
)
def test_redact(raw: str, masked: str) -> None:
    assert masked in redact(raw)
