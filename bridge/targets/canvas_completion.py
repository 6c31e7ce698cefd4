"""Course completion read from Canvas: ``GET /api/v1/courses/:course_id/users/:user_id/progress``
(courses_controller#user_progress, ``CourseProgress``).

Complete when ``completed_at`` is set; in progress when ``requirement_completed_count > 0``;
not started otherwise. Canvas reports no start time, so ``started_at`` stays empty. The course
must be module based with completion requirements (else 400) and the user a student in it (404).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from bridge.targets.canvas import CanvasTarget
from bridge.targets.canvas_api import course_ref
from bridge.targets.canvas_api import describe
from bridge.targets.canvas_api import json_body
from bridge.targets.canvas_api import sis
from bridge.targets.completion import COMPLETE
from bridge.targets.completion import IN_PROGRESS
from bridge.targets.completion import NOT_STARTED
from bridge.targets.completion import Ask
from bridge.targets.completion import Reading


def parse_progress(body: Any) -> Reading:
    """``CourseProgress#to_json`` as a Reading (pure)."""
    if not isinstance(body, Mapping) or "requirement_completed_count" not in body:
        return Reading.failed(f"Canvas progress: unexpected answer: {body!r:.200}")
    completed = body.get("completed_at")
    if completed:
        return Reading(
            COMPLETE, None, datetime.fromisoformat(str(completed).replace("Z", "+00:00"))
        )
    if int(body.get("requirement_completed_count") or 0) > 0:
        return Reading(IN_PROGRESS)
    return Reading(NOT_STARTED)


class CanvasCompletion:
    """Reads progress through a ``CanvasTarget``'s client; the user by SIS id (externalId)
    when known, else by the Canvas id the link holds."""

    def __init__(self, target: CanvasTarget) -> None:
        self.target = target

    async def read(self, ask: Ask) -> Reading:
        if ask.external_id:
            user = sis("sis_user_id", ask.external_id)
        elif ask.lms_user_id:
            user = str(ask.lms_user_id)
        else:
            return Reading.failed("no Canvas user id or SIS id for this person")
        path = f"/api/v1/courses/{course_ref(ask.course)}/users/{user}/progress"
        try:
            response = await self.target.client.get(path)
        except httpx.TransportError as exc:
            return Reading.failed(f"Canvas unreachable: {type(exc).__name__}: {exc}")
        body = json_body(response)
        if response.status_code != 200:
            why = describe(body) or (response.text[:200] or "no body")
            return Reading.failed(f"Canvas {response.status_code}: {why}")
        return parse_progress(body)
