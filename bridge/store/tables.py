"""The SQLModel tables of the bridge (DESIGN §4)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON
from sqlalchemy import Column
from sqlalchemy import DateTime
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field
from sqlmodel import SQLModel

JsonDocument = JSON().with_variant(JSONB(), "postgresql")


def _json_column(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JsonDocument, nullable=nullable))


def _time_column() -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class ResourceRow(SQLModel, table=True):
    """One SCIM resource: indexed columns plus the document (without members/groups)."""

    __tablename__ = "resources"
    __table_args__ = (
        # userName is unique, case-insensitively (RFC 7643 §4.1.1); displayName is not.
        Index(
            "ux_resources_user_name",
            "type",
            "name_key",
            unique=True,
            sqlite_where=text("type = 'User'"),
            postgresql_where=text("type = 'User'"),
        ),
        Index("ix_resources_name_key", "type", "name_key"),
        Index("ux_resources_external_id", "type", "external_id", unique=True),
    )

    pk: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    type: str = Field(sa_column=Column(String(32), nullable=False))
    external_id: str | None = Field(default=None, sa_column=Column(String(255)))
    name: str = Field(sa_column=Column(String(512), nullable=False))
    name_key: str = Field(sa_column=Column(String(512), nullable=False))
    display: str | None = Field(default=None, sa_column=Column(String(512)))
    active: bool | None = None
    doc: dict[str, Any] = _json_column(nullable=False)
    version: int = 1
    created: datetime = _time_column()
    last_modified: datetime = _time_column()


class AttributeValueRow(SQLModel, table=True):
    """One value of a multi-valued attribute, folded for comparison (DESIGN §4).

    ``emails[type eq "work" and value eq "x"]`` is answered from this index with
    same-element semantics (one ``position``), instead of parsing every document.
    """

    __tablename__ = "attribute_values"
    __table_args__ = (
        Index("ix_attribute_values_lookup", "path", "value_key", "resource_pk"),
        Index("ix_attribute_values_resource", "resource_pk"),
    )

    resource_pk: int = Field(primary_key=True)
    path: str = Field(sa_column=Column(String(255), primary_key=True))
    position: int = Field(primary_key=True)
    value_key: str = Field(sa_column=Column(String(1024), nullable=False))


class MembershipRow(SQLModel, table=True):
    """A member of a group: one row, added or removed without loading the group."""

    __tablename__ = "memberships"
    __table_args__ = (Index("ix_memberships_member", "member_id"),)

    group_id: str = Field(sa_column=Column(String(64), primary_key=True))
    member_id: str = Field(sa_column=Column(String(64), primary_key=True))
    member_type: str = Field(sa_column=Column(String(32), nullable=False))


class JournalRow(SQLModel, table=True):
    """An append-only record of one write; ``seq`` is the delta cursor."""

    __tablename__ = "journal"
    __table_args__ = (
        Index("ix_journal_resource", "resource_id", "seq"),
        Index("ix_journal_request", "request_id"),
    )

    seq: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    at: datetime = _time_column()
    actor: str = Field(sa_column=Column(String(255), nullable=False))
    request_id: str | None = Field(default=None, sa_column=Column(String(64)))
    op: str = Field(sa_column=Column(String(32), nullable=False))
    resource_type: str | None = Field(default=None, sa_column=Column(String(32)))
    resource_id: str | None = Field(default=None, sa_column=Column(String(64)))
    before: dict[str, Any] | None = _json_column()
    after: dict[str, Any] | None = _json_column()
    tolerances: list[str] | None = _json_column()
    detail: dict[str, Any] | None = _json_column()


class TokenRow(SQLModel, table=True):
    """A named bearer token, stored only as its SHA-256 hash."""

    __tablename__ = "tokens"

    name: str = Field(sa_column=Column(String(255), primary_key=True))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    scopes: str = Field(sa_column=Column(String(255), nullable=False))
    created: datetime = _time_column()
    revoked: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class ProjectionRow(SQLModel, table=True):
    """The LMS state last projected for one person under one rule file (what the diff runs against)."""

    __tablename__ = "projections"
    __table_args__ = (
        Index("ix_projections_resource", "resource_id"),
        Index("ix_projections_in_scope", "rule_file", "in_scope"),
    )

    rule_file: str = Field(sa_column=Column(String(255), primary_key=True))
    resource_id: str = Field(sa_column=Column(String(64), primary_key=True))
    target: str = Field(sa_column=Column(String(255), nullable=False))
    in_scope: bool = True
    state: dict[str, Any] = _json_column(nullable=False)
    rules_version: str = Field(sa_column=Column(String(64), nullable=False))
    updated: datetime = _time_column()


class OutboxRow(SQLModel, table=True):
    """One LMS call to make, written in the same transaction as the change that implies it."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_person", "target", "ordering_key", "id"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    target: str = Field(sa_column=Column(String(255), nullable=False))
    ordering_key: str = Field(sa_column=Column(String(64), nullable=False))
    intent: dict[str, Any] = _json_column(nullable=False)
    status: str = Field(sa_column=Column(String(16), nullable=False))
    attempts: int = 0
    next_attempt_at: datetime = _time_column()
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    category: str | None = Field(default=None, sa_column=Column(String(32)))
    lease_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    claimed_by: str | None = Field(default=None, sa_column=Column(String(128)))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    journal_seq: int | None = None
    run_id: str | None = Field(default=None, sa_column=Column(String(64)))
    created: datetime = _time_column()


class RunRow(SQLModel, table=True):
    """A plan applied (or quarantined until approved), with its summary."""

    __tablename__ = "runs"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    status: str = Field(sa_column=Column(String(32), nullable=False))
    rules_version: str = Field(sa_column=Column(String(64), nullable=False))
    summary: dict[str, Any] | None = _json_column()
    created: datetime = _time_column()
    approved_by: str | None = Field(default=None, sa_column=Column(String(255)))
    approved_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class LinkRow(SQLModel, table=True):
    """A person in one LMS: its account id there and the state the LMS confirmed."""

    __tablename__ = "links"

    target: str = Field(sa_column=Column(String(255), primary_key=True))
    resource_id: str = Field(sa_column=Column(String(64), primary_key=True))
    lms_user_id: str | None = Field(default=None, sa_column=Column(String(255)))
    confirmed: dict[str, Any] = _json_column(nullable=False)
    updated: datetime = _time_column()


class TargetHealthRow(SQLModel, table=True):
    """Whether the relay may send to a target: ok, unreachable (breaker open), misconfigured."""

    __tablename__ = "target_health"

    target: str = Field(sa_column=Column(String(255), primary_key=True))
    state: str = Field(sa_column=Column(String(32), nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    findings: dict[str, Any] | None = _json_column()
    since: datetime = _time_column()
    checked: datetime = _time_column()
    next_probe: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class RefusalRow(SQLModel, table=True):
    """A write refused because another record holds its identifier (409 ``uniqueness``).

    Written after the refused transaction rolled back; the same refusal again (an IdP
    retrying: same type, attribute, value, holder and refused userName — ``key``) counts up.
    Whether it still holds is computed when read (``bridge.store.refusals``).
    """

    __tablename__ = "refusals"
    __table_args__ = (Index("ux_refusals_key", "key", unique=True),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    key: str = Field(sa_column=Column(String(64), nullable=False))
    resource_type: str = Field(sa_column=Column(String(32), nullable=False))
    attribute: str = Field(sa_column=Column(String(32), nullable=False))
    value: str = Field(sa_column=Column(String(512), nullable=False))
    holder_id: str | None = Field(default=None, sa_column=Column(String(64)))
    holder_name: str | None = Field(default=None, sa_column=Column(String(512)))
    holder_external_id: str | None = Field(default=None, sa_column=Column(String(255)))
    refused_id: str | None = Field(default=None, sa_column=Column(String(64)))
    refused_name: str = Field(sa_column=Column(String(512), nullable=False))
    refused_external_id: str | None = Field(default=None, sa_column=Column(String(255)))
    op: str = Field(sa_column=Column(String(16), nullable=False))
    actor: str = Field(sa_column=Column(String(255), nullable=False))
    request_id: str | None = Field(default=None, sa_column=Column(String(64)))
    count: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    first_seen: datetime = _time_column()
    last_seen: datetime = _time_column()
    dismissed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    dismissed_by: str | None = Field(default=None, sa_column=Column(String(255)))


metadata = SQLModel.metadata


class ServerSecretRow(SQLModel, table=True):
    """A random secret of this database, made once, shared by every process that opens it
    (the key of list cursors: bridge/store/cursors.py)."""

    __tablename__ = "server_secrets"

    name: str = Field(sa_column=Column(String(32), primary_key=True))
    secret: str = Field(sa_column=Column(String(128), nullable=False))
    created: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class TrainingStatusRow(SQLModel, table=True):
    """The last reading of one person's progress in one course of one LMS (``bridge training``).

    ``state`` is not_started, in_progress or complete; null when the read failed (``error``).
    """

    __tablename__ = "training_status"

    target: str = Field(sa_column=Column(String(255), primary_key=True))
    resource_id: str = Field(sa_column=Column(String(64), primary_key=True))
    course: str = Field(sa_column=Column(String(255), primary_key=True))
    state: str | None = Field(default=None, sa_column=Column(String(16)))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    completed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    read_at: datetime = _time_column()
    error: str | None = Field(default=None, sa_column=Column(Text))


class ScheduleRunRow(SQLModel, table=True):
    """One occurrence of a scheduled job (``schedule:`` of a rule file), claimed once.

    The unique (``job_key``, ``occurrence``) insert is the claim: of every process that sees
    the occurrence due, the one whose insert lands runs it. ``state`` is running, done or
    failed; ``summary`` says what the job found and did, ``error`` why it failed.
    """

    __tablename__ = "schedule_runs"
    __table_args__ = (
        Index("ux_schedule_runs_occurrence", "job_key", "occurrence", unique=True),
        Index("ix_schedule_runs_started", "started"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    job_key: str = Field(sa_column=Column(String(320), nullable=False))
    rule_file: str = Field(sa_column=Column(String(255), nullable=False))
    job: str = Field(sa_column=Column(String(32), nullable=False))
    occurrence: datetime = _time_column()
    state: str = Field(sa_column=Column(String(16), nullable=False))
    started: datetime = _time_column()
    finished: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    worker: str = Field(sa_column=Column(String(128), nullable=False))
    summary: dict[str, Any] | None = _json_column()
    error: str | None = Field(default=None, sa_column=Column(Text))


class FeedPersonRow(SQLModel, table=True):
    """A person an HR feed owns: the feed created or last synced them (``bridge sync``).

    ``content_hash`` is the hash of what the feed mapped for them at the last sync (an
    unchanged export row costs no write); ``deactivated`` is set when an export no longer
    listed them and the sync deactivated them.
    """

    __tablename__ = "feed_people"
    __table_args__ = (Index("ix_feed_people_resource", "resource_id"),)

    feed: str = Field(sa_column=Column(String(64), primary_key=True))
    external_id: str = Field(sa_column=Column(String(255), primary_key=True))
    resource_id: str = Field(sa_column=Column(String(64), nullable=False))
    content_hash: str | None = Field(default=None, sa_column=Column(String(64)))
    run_id: str | None = Field(default=None, sa_column=Column(String(64)))
    seen_at: datetime = _time_column()
    deactivated: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class WebhookRefusalRow(SQLModel, table=True):
    """How often an HR feed's webhooks or export uploads were refused before anything was
    stored, per reason (``unsigned``, ``forged``, ``stale``…): the count, the last reason and
    when; nothing of the refused body."""

    __tablename__ = "webhook_refusals"

    feed: str = Field(sa_column=Column(String(64), primary_key=True))
    kind: str = Field(sa_column=Column(String(16), primary_key=True))
    error: str = Field(sa_column=Column(String(32), primary_key=True))
    count: int = Field(sa_column=Column(Integer, nullable=False))
    last_reason: str | None = Field(default=None, sa_column=Column(Text))
    first_at: datetime = _time_column()
    last_at: datetime = _time_column()


class WebhookEventRow(SQLModel, table=True):
    """One HR webhook event (``POST /hris/v1/events/{feed}``), verified and durably queued.

    The unique (``feed``, ``event_id``) index is the dedup: a replay finds its row. ``state`` is
    queued, applied, ignored (older than the person's last applied event) or failed
    (``detail`` says why and what to fix in the HRIS); ``journal_seq`` is the write it made.
    An event whose record the HRIS could not give yet waits until ``next_attempt``, and the
    person's later events wait behind it.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ux_webhook_events_event", "feed", "event_id", unique=True),
        Index("ix_webhook_events_state", "state", "occurred"),
        Index("ix_webhook_events_person", "feed", "external_id", "state"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    feed: str = Field(sa_column=Column(String(64), nullable=False))
    event_id: str = Field(sa_column=Column(String(255), nullable=False))
    event_type: str = Field(sa_column=Column(String(32), nullable=False))
    external_id: str = Field(sa_column=Column(String(255), nullable=False))
    occurred: datetime = _time_column()
    received: datetime = _time_column()
    payload: dict[str, Any] = _json_column(nullable=False)
    state: str = Field(sa_column=Column(String(16), nullable=False))
    detail: str | None = Field(default=None, sa_column=Column(Text))
    journal_seq: int | None = Field(default=None, sa_column=Column(Integer))
    attempts: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    next_attempt: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    finished: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
