"""``bridge lmssim`` as a new user meets it: the start banner names each LMS's URL and the token
it accepts, the tokens and the outage window are flags, and the simulator answers what its
docstring says (an outage 503, throttling 429 on Moodle and 403 on Canvas, faults 500/502).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bridge.lmssim import SIM_CANVAS_TOKEN
from bridge.lmssim import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app

SITE_INFO = {"wsfunction": "core_webservice_get_site_info", "moodlewsrestformat": "json"}
BANNER_LINES = 6


@contextmanager
def lmssim(*args: str, env: dict[str, str] | None = None) -> Iterator[list[str]]:
    """``bridge lmssim --port 0 ARGS`` in a process of its own; yields its banner's lines."""
    with subprocess.Popen(
        [str(Path(sys.executable).parent / "bridge"), "lmssim", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    ) as process:
        try:
            assert process.stdout is not None
            count = BANNER_LINES + (1 if "--outage-seconds" in args else 0)
            lines = [process.stdout.readline().rstrip("\n") for _ in range(count)]
            assert lines[0].startswith("LMS simulator listening on "), lines
            yield lines
        finally:
            process.terminate()
            process.wait(timeout=15)


def shown(lines: list[str], lms: str) -> tuple[str, str]:
    """The URL and token the banner gives for ``lms`` (``Moodle`` or ``Canvas``)."""
    for line in lines:
        found = re.match(rf"\s+{lms}: (\S+) \(token (\S+)\)$", line)
        if found:
            return found[1], found[2]
    raise AssertionError(f"no {lms} line in {lines}")


def moodle_call(url: str, token: str) -> httpx.Response:
    return httpx.post(url, data={"wstoken": token, **SITE_INFO}, timeout=10)


def test_the_banner_gives_each_lms_its_url_and_the_token_it_accepts() -> None:
    with lmssim("--canvas-token", "c-secret", env={"LMSSIM_MOODLE_TOKEN": "m-secret"}) as lines:
        moodle_url, moodle_token = shown(lines, "Moodle")
        canvas_url, canvas_token = shown(lines, "Canvas")
        assert (moodle_token, canvas_token) == ("m-secret", "c-secret")
        assert moodle_url.endswith("/webservice/rest/server.php")
        assert canvas_url.endswith("/api/v1")
        assert "  export MOODLE_TOKEN=m-secret CANVAS_TOKEN=c-secret" in lines
        base = lines[0].rsplit(" ", 1)[1]
        assert f"For the bridge (rules/targets.yaml base_url: {base}):" in lines

        answer = moodle_call(moodle_url, moodle_token)
        assert answer.status_code == 200 and answer.json()["siteid"] == 1
        # the well-known default is no longer accepted: Moodle's own "invalid token" answer
        refused = moodle_call(moodle_url, SIM_MOODLE_TOKEN).json()
        assert refused["errorcode"] == "invalidtoken"
        users = f"{canvas_url}/accounts/1/users"
        assert httpx.get(users, headers={"Authorization": f"Bearer {canvas_token}"}).is_success
        assert (
            httpx.get(users, headers={"Authorization": f"Bearer {SIM_CANVAS_TOKEN}"}).status_code
            == 401
        )


def test_the_default_tokens_are_printed() -> None:
    with lmssim() as lines:
        assert shown(lines, "Moodle")[1] == SIM_MOODLE_TOKEN
        assert shown(lines, "Canvas")[1] == SIM_CANVAS_TOKEN


def test_the_outage_window_is_a_flag() -> None:
    with lmssim("--outage-seconds", "60", "--outage-after", "0.5") as lines:
        assert lines[-1] == (
            "Outage: every call answers 503 (Retry-After: 1) for 60 s, from 0.5 s after start"
        )
        url, token = shown(lines, "Moodle")
        assert moodle_call(url, token).status_code == 200  # before the window opens
        deadline = time.monotonic() + 15
        while (answer := moodle_call(url, token)).status_code == 200:
            assert time.monotonic() < deadline, "the outage window never opened"
            time.sleep(0.1)
        assert (answer.status_code, answer.headers["Retry-After"]) == (503, "1")


@pytest.mark.parametrize(
    ("knobs", "moodle", "canvas"),
    [
        (Knobs(), 503, 503),  # an outage window (opened below)
        (Knobs(rate_limit_per_s=0.01, burst=1), 429, 403),  # the bucket starts empty
        (Knobs(error_rate=1.0, seed=3), {500, 502}, {500, 502}),
    ],
    ids=["outage", "rate-limit", "error-rate"],
)
async def test_the_simulator_answers_what_its_docstring_says(
    knobs: Knobs, moodle: int | set[int], canvas: int | set[int]
) -> None:
    if not (knobs.rate_limit_per_s or knobs.error_rate):
        knobs.outage(60)
    app = create_app(knobs)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        answer = await client.post(
            "/webservice/rest/server.php", data={"wstoken": SIM_MOODLE_TOKEN, **SITE_INFO}
        )
        assert answer.status_code in (moodle if isinstance(moodle, set) else {moodle})
        answer = await client.get(
            "/api/v1/accounts/1/users", headers={"Authorization": f"Bearer {SIM_CANVAS_TOKEN}"}
        )
        assert answer.status_code in (canvas if isinstance(canvas, set) else {canvas})
        if answer.status_code in (503, 429, 403):
            assert "Retry-After" in answer.headers
