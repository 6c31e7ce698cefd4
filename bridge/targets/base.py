"""What every target is: the ``Target`` protocol, the delivery it receives, the result it gives.

A target turns one intent (``bridge.rules.engine.Intent.as_dict()``) into LMS calls with httpx
and classifies what came back. Building requests and parsing responses are pure functions in
each target module; ``deliver`` is the thin shell that sends them. Targets are effectively-once:
they look up before they create, and treat "already done" answers as done.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from enum import StrEnum
from typing import Any
from typing import Protocol

from bridge.targets.circuit import capped


class TargetConfigError(ValueError):
    """A target cannot be built: unknown kind, bad options, or a credential's variable unset."""


class Category(StrEnum):
    """Whose fix a failure needs (``bridge errors``; the guide's vocabulary in ``GUIDE_TERMS``).

    ``configuration``: the target or the rules (auth plugin, missing course or cohort, a
    web-service function not allowed, a bad token, an undefined profile field);
    ``data_quality``: the HR record (the value itself is invalid for the LMS, named with its
    field); ``transient``: outages, timeouts, throttling — retried, never the data's fault.
    """

    configuration = "configuration"
    data_quality = "data_quality"
    transient = "transient"

    @classmethod
    def _missing_(cls, value: object) -> Category | None:
        # Names before the split (rule files and stored rows may still say them).
        legacy = {"mapping": cls.configuration, "provisioning": cls.configuration}
        return legacy.get(str(value))


GUIDE_TERMS = {
    Category.data_quality: "data quality (stale or missing fields: fix the HR record)",
    Category.configuration: "mapping mistakes (fix the rules or the LMS setup)",
    Category.transient: "provisioning errors (API failures: retried by the relay)",
}
"""How the three categories read in the integration guide's terms (hris-lms-guide.txt)."""


class Status(StrEnum):
    done = "done"
    retry = "retry"
    dead = "dead"


@dataclass(frozen=True)
class Delivery:
    """One intent to deliver, with what the bridge already knows of the person in that LMS.

    ``intent``: ``{"kind", "person", "target", "rule", "ref"?, "data"?}`` as the engine made it.
    ``lms_user_id``: the LMS account id from ``links`` (None: not known yet — look it up).
    ``account``: the projected account attributes (idnumber, username, email…), so that any
    intent can find the account even when the link was lost.
    """

    intent: dict[str, Any]
    lms_user_id: str | None = None
    account: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.intent["kind"])

    @property
    def ref(self) -> str | None:
        ref = self.intent.get("ref")
        return str(ref) if ref is not None else None

    @property
    def data(self) -> dict[str, Any]:
        data = self.intent.get("data")
        return dict(data) if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Result:
    """How a delivery ended: done (with the LMS account id), retry (when), or dead (why)."""

    status: Status
    lms_user_id: str | None = None
    retry_after: float | None = None  # seconds, from Retry-After / rate-limit headers
    category: Category | None = None
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # journalled: calls made, LMS answers

    @classmethod
    def done(cls, lms_user_id: str | None = None, message: str = "", **detail: Any) -> Result:
        return cls(Status.done, lms_user_id=lms_user_id, message=message, detail=detail)

    @classmethod
    def retry(cls, message: str, *, after: float | None = None, **detail: Any) -> Result:
        return cls(
            Status.retry,
            retry_after=capped(after),
            category=Category.transient,
            message=message,
            detail=detail,
        )

    @classmethod
    def dead(cls, category: Category, message: str, **detail: Any) -> Result:
        return cls(Status.dead, category=category, message=message, detail=detail)


INTENT_KINDS = (
    "upsert_account",
    "reactivate_account",
    "suspend_account",
    "enrol",
    "suspend_enrolment",
    "unenrol",
    "add_cohort_member",
    "remove_cohort_member",
)


class Target(Protocol):
    """An LMS the relay delivers to. ``deliver`` never raises for LMS or network trouble:
    every outcome is a Result (timeouts and 5xx → retry; 4xx with the LMS's message → dead)."""

    name: str
    kind: str

    async def deliver(self, delivery: Delivery) -> Result: ...

    async def aclose(self) -> None: ...
