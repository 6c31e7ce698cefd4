"""The stored population `bridge rules check` reads (bridge.store.population): the distinct role
codes people hold, as written, from the attribute-value index or the documents; and a database
opened only where one exists, never created."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.schemas import Catalog
from bridge.schemas import load_catalog
from bridge.store import population
from bridge.store.engine import Database
from tests.conftest import ROOT
from tests.conftest import employee
from tests.conftest import user_payload

SAMPLE = (["BEN_CHOICE_2026", "MANAGER"], ["ben_choice_2026"], ["BEN_CHOICE_2026"], [])


def store_people(provisioner: Provisioner) -> None:
    for number, codes in enumerate(SAMPLE, 1):
        provisioner.create(Cause("hris"), "User", employee(number, codes=codes))
    provisioner.create(Cause("hris"), "User", user_payload("no-hr-extension"))


def test_the_distinct_codes_people_hold_as_written(db: Database, catalog: Catalog) -> None:
    store_people(Provisioner(db, catalog))
    with db.read() as conn:
        codes = population.role_codes(conn, catalog.user)
    assert codes == {"BEN_CHOICE_2026", "MANAGER", "ben_choice_2026"}


def test_codes_compared_case_insensitively_are_read_from_the_documents(
    db: Database, tmp_path: Path
) -> None:
    # A schema whose roleCodes is not caseExact indexes folded keys: not the codes HR sent.
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    hr = json.loads((schemas / "hr-user.json").read_text())
    for attribute in hr["attributes"]:
        if attribute["name"] == "roleCodes":
            attribute["caseExact"] = False
    (schemas / "hr-user.json").write_text(json.dumps(hr))
    catalog = load_catalog(schemas)
    store_people(Provisioner(db, catalog))
    with db.read() as conn:
        assert population.role_codes(conn, catalog.user) == {
            "BEN_CHOICE_2026",
            "MANAGER",
            "ben_choice_2026",
        }


def test_stored_role_codes_of_a_database_url(
    database_url: str, db: Database, catalog: Catalog
) -> None:
    store_people(Provisioner(db, catalog))
    assert population.stored_role_codes(database_url, catalog.user) == {
        "BEN_CHOICE_2026",
        "MANAGER",
        "ben_choice_2026",
    }


def test_no_database_is_none_and_none_is_created(tmp_path: Path, catalog: Catalog) -> None:
    absent = tmp_path / "absent.db"
    assert population.stored_role_codes(f"sqlite:///{absent}", catalog.user) is None
    assert not absent.exists()
    assert population.stored_role_codes("sqlite://", catalog.user) is None
    unmigrated = tmp_path / "other.db"
    sqlite3.connect(unmigrated).close()
    assert population.stored_role_codes(f"sqlite:///{unmigrated}", catalog.user) is None
    unreachable = "postgresql://bridge@127.0.0.1:1/bridge"
    assert population.stored_role_codes(unreachable, catalog.user) is None
