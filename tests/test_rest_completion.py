"""Completion read back from a ``rest`` LMS where its ``completion:`` option says: the worked
Docebo example against the fake Docebo of tests/test_rest_target.py, the option's checks, and
the answers a reader must not misread."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from datetime import datetime

import httpx
import pytest

from bridge.targets.completion import Ask
from bridge.targets.completion import Reading
from bridge.targets.completion import read_all
from bridge.targets.rest import RestTarget
from bridge.targets.rest import parse_options
from bridge.targets.rest import validate_options
from bridge.targets.rest_completion import RestCompletion
from bridge.targets.rest_completion import moment
from bridge.targets.rest_completion import parse_reading
from tests.test_rest_target import CREDENTIALS
from tests.test_rest_target import EXAMPLE
from tests.test_rest_target import FakeDocebo
from tests.test_rest_target import upsert

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def spec_of(**completion: object):  # type: ignore[no-untyped-def]
    options = {**EXAMPLE.options, "completion": completion}
    spec, problems = parse_options(options)
    return spec.completion, problems


def test_the_worked_example_declares_where_completion_is_read() -> None:
    spec, problems = parse_options(EXAMPLE.options)
    assert problems == []
    assert spec.completion is not None
    assert spec.completion.request.method == "GET"
    assert spec.completion.states["completed"] == "complete"


@pytest.mark.parametrize(
    ("completion", "problem"),
    [
        ({"url": "/x", "states": {"done": "complete"}}, "completion.state: the JSON path"),
        ({"url": "/x", "state": "$.s"}, "completion.states: a mapping"),
        ({"url": "/x", "state": "$.s", "states": {"done": "finished"}}, "completion.states.done"),
        (
            {"url": "/x", "state": "$.s", "states": {"a": "complete"}, "completed_at": "a b"},
            "completion.completed_at: a JSON path",
        ),
        ({"url": "/x", "state": "$.s", "states": {"a": "complete"}, "stat": 1}, "did you mean"),
        ({"url": "x", "state": "$.s", "states": {"a": "complete"}}, "completion.url"),
    ],
)
def test_a_wrong_completion_option_is_named(completion: dict[str, object], problem: str) -> None:
    options = {**EXAMPLE.options, "completion": completion}
    problems = validate_options(options)
    assert any(problem in p for p in problems), problems


def test_times_are_iso_or_unix_and_never_is_none() -> None:
    assert moment("2026-11-20T12:00:00Z") == T
    assert moment("2026-11-20 12:00:00") == T
    assert moment(int(T.timestamp())) == T
    assert moment(str(int(T.timestamp()))) == T
    assert moment(None) is None and moment(0) is None and moment("") is None
    assert moment("not a time") is None


def test_a_word_the_table_does_not_map_says_what_to_add() -> None:
    spec, _ = spec_of(url="/x", state="$.data.status", states={"completed": "complete"})
    reading = parse_reading(spec, {"data": {"status": "failed"}})
    assert reading.state is None
    assert reading.error is not None and "'failed'" in reading.error
    assert "add it in targets.yaml" in reading.error
    missing = parse_reading(spec, {"data": {}})
    assert missing.error == "completion: no state at $.data.status in the answer"
    # A completion time is kept only when the state is complete.
    spec, _ = spec_of(
        url="/x", state="$.s", states={"a": "in_progress"}, completed_at="$.c", started_at="$.b"
    )
    assert parse_reading(spec, {"s": "a", "b": "2026-11-20T12:00:00Z", "c": 1}) == Reading(
        "in_progress", T, None
    )


@pytest.fixture
async def docebo() -> AsyncIterator[tuple[RestTarget, FakeDocebo]]:
    fake = FakeDocebo()
    target = RestTarget(EXAMPLE, CREDENTIALS, transport=httpx.MockTransport(fake))
    yield target, fake
    await target.aclose()


async def test_progress_is_read_through_the_target_for_each_learner(
    docebo: tuple[RestTarget, FakeDocebo],
) -> None:
    target, fake = docebo
    user_id = (await target.deliver(upsert())).lms_user_id
    assert user_id is not None
    fake.enrolments[("42", user_id)] = {"status": "completed", "date_complete": T.isoformat()}
    fake.enrolments[("43", user_id)] = {"status": "in_progress", "date_first_access": "1763640000"}
    spec = target.spec.completion
    assert spec is not None
    reader = RestCompletion(target, spec)
    asks = [
        Ask("p-1", user_id, "E100", "42"),
        Ask("p-1", user_id, "E100", "43"),
        Ask("p-1", user_id, "E100", "44"),  # not enrolled there: Docebo's 404, in its words
        Ask("p-2", None, "E101", "42"),  # no account known: nothing to ask
    ]
    readings = await read_all(reader, asks)
    assert readings[0] == Reading("complete", None, T)
    assert readings[1].state == "in_progress"
    assert readings[1].started_at == datetime.fromtimestamp(1763640000, UTC)
    assert readings[2].state is None and readings[2].error is not None
    assert "HTTP 404" in readings[2].error and "Enrollment not found" in readings[2].error
    assert readings[3].error is not None and "cannot build the request" in readings[3].error
    assert fake.calls.count(f"GET /learn/v1/enrollments/42/{user_id}") == 1


async def test_a_throttled_read_is_an_error_for_that_learner_only(
    docebo: tuple[RestTarget, FakeDocebo],
) -> None:
    target, fake = docebo
    user_id = (await target.deliver(upsert())).lms_user_id
    fake.enrolments[("42", str(user_id))] = {"status": "subscribed"}
    spec = target.spec.completion
    assert spec is not None
    fake.scripted.append(httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "x"}))
    reader = RestCompletion(target, spec)
    first = await reader.read(Ask("p-1", user_id, "E100", "42"))
    assert first.state is None and first.error is not None and "HTTP 429" in first.error
    assert (await reader.read(Ask("p-1", user_id, "E100", "42"))) == Reading("not_started")


async def test_reader_for_a_rest_target_is_there_only_when_declared() -> None:
    from bridge.rules.model import Target as TargetConfig
    from bridge.targets.completion import reader_for

    declared = RestTarget(EXAMPLE, CREDENTIALS, transport=httpx.MockTransport(FakeDocebo()))
    options = {k: v for k, v in EXAMPLE.options.items() if k != "completion"}
    bare_config = TargetConfig(EXAMPLE.name, "rest", EXAMPLE.base_url, options=options)
    bare = RestTarget(bare_config, CREDENTIALS, transport=httpx.MockTransport(FakeDocebo()))
    assert isinstance(reader_for(declared), RestCompletion)
    assert reader_for(bare) is None
    await declared.aclose()
    await bare.aclose()
