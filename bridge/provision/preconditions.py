"""Preconditions of a write (RFC 7644 §3.14): the ``If-Match`` ETags against a record's
version. A Record's ETag is ``W/"<version>"``; the strong form is accepted as well.
"""

from __future__ import annotations

from scim2_models import PreconditionFailedException

from bridge.store.resources import Record


def check_if_match(record: Record, if_match: str | None) -> None:
    """RFC 7644 §3.14: a stale ``If-Match`` is 412 and nothing is written."""
    if if_match is None:
        return
    tags = {tag.strip() for tag in if_match.split(",")}
    if "*" in tags:
        return
    strong = record.etag.removeprefix("W/")
    if record.etag not in tags and strong not in tags:
        raise PreconditionFailedException(
            detail=f"the resource is at version {record.etag}, not {if_match}"
        )
