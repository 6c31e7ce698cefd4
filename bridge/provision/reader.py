"""Reads of SCIM resources (RFC 7644 §3.4): one by id, or a page of a list or search, with a
group's members or a user's groups attached, each under an optional ``QueryBudget``; and
which reads are cheap enough to run inline.
"""

from __future__ import annotations

from typing import Any

from scim2_models import NotFoundException
from scim2_models import SCIMException
from scim2_models.path import FilterNode

from bridge.store.engine import Database
from bridge.store.engine import QueryBudget
from bridge.store.resources import Page
from bridge.store.resources import Record
from bridge.store.resources import ResourceStore


class Reader:
    """Reads of SCIM resources over the store; the Provisioner adds the writes."""

    def __init__(self, db: Database, store: ResourceStore) -> None:
        self.db = db
        self.store = store

    def get(
        self,
        resource_type: str,
        resource_id: str,
        *,
        with_members: bool = True,
        inline: bool = False,
        budget: QueryBudget | None = None,
    ) -> Record:
        """One resource; ``inline``: on the caller's own connection (see ``is_point_read``);
        ``budget``: ``QueryBudgetExceeded`` past its deadline, ``QueryCancelled`` once cancelled."""
        with self.db.read_inline(budget) if inline else self.db.read(budget) as conn:
            record = self.store.get(conn, resource_type, resource_id)
            if record is None:
                raise NotFoundException(detail=f"{resource_type} {resource_id} not found")
            if with_members:
                self._attach_members(conn, [record])
            return record

    def search(
        self,
        types: list[str],
        node: FilterNode | None,
        *,
        with_members: bool = True,
        inline: bool = False,
        budget: QueryBudget | None = None,
        **paging: Any,
    ) -> Page:
        """One page of a list or search; ``inline``: on the caller's own connection (see
        ``is_point_read``); ``budget``: as for ``get``."""
        with self.db.read_inline(budget) if inline else self.db.read(budget) as conn:
            page = self.store.search(conn, types, node, **paging)
            if with_members:
                self._attach_members(conn, page.records)
            return page

    def is_point_read(
        self,
        types: list[str],
        node: FilterNode | None = None,
        *,
        by_id: bool = False,
        with_members: bool = True,
        sort_by: Any = None,
        descending: bool = False,
        start_index: int = 1,
        cursor: str | None = None,
    ) -> bool:
        """Whether a read is a few index reads on the embedded database: a user, or a group
        without its members, ``by_id`` or by a search for ``userName``/``displayName``/
        ``externalId``/``id eq "x"`` (``node``). Cheaper run where it is asked than handed to
        a thread. Never true on PostgreSQL, where a read is a network round trip.
        """
        if not self.db.is_sqlite or len(types) != 1:
            return False
        if types[0] == "Group" and with_members:
            return False  # a group may hold 100k members
        if by_id:
            return True
        if node is None:
            return False
        if cursor or sort_by is not None or descending or start_index > 1:
            return False
        try:
            return self.store.filters[types[0]].point_lookup(node) is not None
        except SCIMException:
            return False

    def _attach_members(self, conn: Any, records: list[Record]) -> None:
        groups = [r.id for r in records if r.type == "Group"]
        users = [r.id for r in records if r.type == "User"]
        found = {}
        if groups:
            found.update(self.store.members_of(conn, groups))
        if users:
            found.update(self.store.groups_of(conn, users))
        for record in records:
            record.members = found.get(record.id, [])
