"""The stored population as ``bridge rules check`` sees it: the role codes people hold.

Read from the attribute-value index (``bridge.store.values``) where the HR extension's
``roleCodes`` is indexed as written (caseExact), else from the documents. ``stored_role_codes``
opens a database only where one exists: it never creates a SQLite file, and a server that does
not answer (or a database never migrated) is no database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scim2_models import Resource
from sqlalchemy import Connection
from sqlalchemy import make_url
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from bridge.rules.rolecodes import ROLE_CODES_ATTRIBUTE
from bridge.store.engine import DatabaseBusy
from bridge.store.engine import connect
from bridge.store.engine import normalize_url
from bridge.store.tables import AttributeValueRow
from bridge.store.tables import ResourceRow
from bridge.store.values import indexed_attributes

RESOURCES = ResourceRow.__table__  # type: ignore[attr-defined]
VALUES = AttributeValueRow.__table__  # type: ignore[attr-defined]
CONNECT_TIMEOUT_SECONDS = 5


def _from_documents(conn: Connection) -> set[str]:
    codes: set[str] = set()
    for (doc,) in conn.execute(select(RESOURCES.c.doc).where(RESOURCES.c.type == "User")):
        document = json.loads(doc) if isinstance(doc, str) else doc
        if not isinstance(document, dict):
            continue
        for key, block in document.items():
            if ":" not in key or not isinstance(block, dict):
                continue  # role codes live in an extension block
            for name, values in block.items():
                if name.lower() == ROLE_CODES_ATTRIBUTE and isinstance(values, list):
                    codes.update(v for v in values if isinstance(v, str))
    return codes


def role_codes(conn: Connection, user_model: type[Resource[Any]]) -> frozenset[str]:
    """The distinct role codes the stored Users hold (``roleCodes`` of any extension)."""
    attributes = [
        a
        for a in indexed_attributes(user_model)
        if a.name.lower() == ROLE_CODES_ATTRIBUTE and a.sub_attributes is None
    ]
    if not attributes or any(a.kind != "exact" for a in attributes):
        return frozenset(_from_documents(conn))  # folded keys are not the codes as written
    rows = conn.execute(
        select(VALUES.c.value_key)
        .distinct()
        .select_from(VALUES.join(RESOURCES, RESOURCES.c.pk == VALUES.c.resource_pk))
        .where(VALUES.c.path.in_([a.path for a in attributes]), RESOURCES.c.type == "User")
    )
    return frozenset(str(row[0]) for row in rows)


def stored_role_codes(url: str, user_model: type[Resource[Any]]) -> frozenset[str] | None:
    """The role codes held by the people of the database at ``url``; None when there is no
    database to read there (a SQLite file that does not exist, a server that does not answer,
    a database the bridge never migrated)."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or not Path(database).is_file():
            return None
    elif "connect_timeout" not in parsed.query:
        parsed = parsed.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_SECONDS)})
    db = connect(parsed.render_as_string(hide_password=False), pool_size=1)
    try:
        with db.read() as conn:
            return role_codes(conn, user_model)
    except (SQLAlchemyError, DatabaseBusy):
        return None
    finally:
        db.dispose()
