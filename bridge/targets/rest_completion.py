"""Reading completion back from a ``rest`` LMS, where its ``completion:`` option says.

The request is rendered like an intent's (``ref`` is the course, ``lms_user_id`` and
``person`` the learner's), classified by the same rules (``bridge.targets.rest.classify``),
and the answer's ``state`` mapped through ``states``; a word the table does not name is an
error that says which word to add. Example (Docebo)::

    completion:
      method: GET
      url: /learn/v1/enrollments/{{ ref }}/{{ lms_user_id }}
      state: $.data.status
      states: {subscribed: not_started, in_progress: in_progress, completed: complete}
      completed_at: $.data.date_complete
"""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from typing import Any

from bridge.targets.base import Delivery
from bridge.targets.base import Status
from bridge.targets.completion import Ask
from bridge.targets.completion import Reading
from bridge.targets.rest import RestTarget
from bridge.targets.rest import build_request
from bridge.targets.rest import classify
from bridge.targets.rest import parse_body
from bridge.targets.rest_spec import CompletionSpec
from bridge.targets.templates import MISSING
from bridge.targets.templates import TemplateError
from bridge.targets.templates import as_text
from bridge.targets.templates import extract


def ask_delivery(ask: Ask, target: str) -> Delivery:
    """An ``Ask`` as the templates see a delivery: ``ref`` the course, the learner's ids."""
    intent = {"kind": "completion", "person": ask.resource_id, "target": target, "ref": ask.course}
    account = {"idnumber": ask.external_id} if ask.external_id else {}
    return Delivery(intent=intent, lms_user_id=ask.lms_user_id, account=account)


def moment(value: Any) -> datetime | None:
    """An ISO-8601 text or a Unix time from an LMS answer (0, "" and null: never)."""
    if value in (MISSING, None, "", 0, "0"):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    text = as_text(value).strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def parse_reading(spec: CompletionSpec, doc: Any) -> Reading:
    """The learner's state from an answer the LMS gave as done (pure)."""
    word = extract(doc, spec.state)
    if word in (MISSING, None) or isinstance(word, dict | list):
        return Reading.failed(f"completion: no state at {spec.state} in the answer")
    meaning = spec.states.get(as_text(word))
    if meaning is None:
        known = ", ".join(sorted(spec.states))
        return Reading.failed(
            f"completion: the LMS answered state {as_text(word)!r}, which completion.states "
            f"does not map (it maps: {known}); add it in targets.yaml"
        )
    started = moment(extract(doc, spec.started_at)) if spec.started_at else None
    completed = moment(extract(doc, spec.completed_at)) if spec.completed_at else None
    return Reading(meaning, started, completed if meaning == "complete" else None)


class RestCompletion:
    """Reads one person's completion in one course from a ``rest`` target's LMS."""

    def __init__(self, target: RestTarget, spec: CompletionSpec) -> None:
        self.target = target
        self.spec = spec

    async def read(self, ask: Ask) -> Reading:
        request = self.spec.request
        try:
            method, url, headers, body = build_request(request, ask_delivery(ask, self.target.name))
        except TemplateError as exc:
            return Reading.failed(f"completion: cannot build the request: {exc}")
        response = await self.target.client.request(
            method, url, headers=headers, content=body.encode() if body is not None else None
        )
        result = classify(request, response.status_code, response.headers, response.content)
        if result.status != Status.done:
            return Reading.failed(result.message)
        _, doc = parse_body(response.content)
        return parse_reading(self.spec, doc)
