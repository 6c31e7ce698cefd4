"""``bridge demo``'s HRIS sample (pure, deterministic): the Claims department and its edge cases.

:func:`hr_sample` makes the people an IdP would provision on day 1 (missing emails, duplicate
employee ids, non-standard role codes, a few people of other departments) and the day-2
change; :func:`role_patch` / :func:`termination_patch` are the Entra-style PATCHes that send it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BENEFITS = "BEN_CHOICE_2026"
MANAGER = "MANAGER"
NON_STANDARD = ("ben_choice_2026", "BEN-CHOICE-2026", "BEN_CHOICE2026", "Ben_Choice_2026")
"""What HR systems send instead of BEN_CHOICE_2026 (roleCodes compare case-exactly)."""
PILOT_DEPARTMENT = "Claims"
OTHER_DEPARTMENTS = ("Underwriting", "Finance", "IT", "Sales")
SEED = 2026


_FIRST = (  # noqa: SIM905 - a compact list of sample names
    "Ava Ben Chloe Dev Elena Farid Grace Hiro Isla Jonas Kemi Liam Maya Noah Olga Priya Quinn "
    "Rosa Sam Tariq Uma Victor Wen Xavier Yara Zoe"
).split()
_LAST = (  # noqa: SIM905 - a compact list of sample names
    "Adams Baker Chen Diaz Evans Fischer Garcia Haddad Ivanova Jones Kim Lopez Murphy Nguyen "
    "Okafor Patel Quist Rossi Smith Tanaka Usman Varga Walsh Xu Young Zimmer"
).split()
_TITLES = ("Claims Specialist", "Claims Adjuster", "Senior Claims Examiner", "Claims Analyst")


@dataclass(frozen=True)
class HrRecord:
    """One HR record, as the HRIS exports it and an IdP provisions it."""

    external_id: str
    user_name: str
    given_name: str
    family_name: str
    title: str
    department: str
    role_codes: tuple[str, ...]
    work_email: str | None
    home_email: str | None
    hire_date: str
    edge: str | None = None  # missing_email | duplicate_id | non_standard_code
    duplicate_of: str | None = None  # userName of the record holding the same employee id

    @property
    def in_pilot_department(self) -> bool:
        return self.department == PILOT_DEPARTMENT

    def scim(self) -> dict[str, Any]:
        """The SCIM User an IdP POSTs for this record (core + enterprise + HR extension)."""
        emails = []
        if self.work_email:
            emails.append({"value": self.work_email, "type": "work", "primary": True})
        if self.home_email:
            emails.append({"value": self.home_email, "type": "home"})
        hr: dict[str, Any] = {"employmentStatus": "active", "hireDate": self.hire_date}
        if self.role_codes:
            hr["roleCodes"] = list(self.role_codes)
        doc: dict[str, Any] = {
            "schemas": [CORE, ENTERPRISE, HR],
            "externalId": self.external_id,
            "userName": self.user_name,
            "active": True,
            "name": {"givenName": self.given_name, "familyName": self.family_name},
            "displayName": f"{self.given_name} {self.family_name}",
            "title": self.title,
            ENTERPRISE: {"employeeNumber": self.external_id[1:], "department": self.department},
            HR: hr,
        }
        if emails:
            doc["emails"] = emails
        return doc


@dataclass(frozen=True)
class DayTwo:
    """The day-2 changes, by employee id."""

    add_benefits: tuple[str, ...]
    remove_benefits: tuple[str, ...]
    terminate: tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    records: tuple[HrRecord, ...]
    day_two: DayTwo

    @property
    def pilot(self) -> list[HrRecord]:
        return [r for r in self.records if r.in_pilot_department]

    @property
    def others(self) -> list[HrRecord]:
        return [r for r in self.records if not r.in_pilot_department]


def edge_case_counts(people: int) -> dict[str, int]:
    """How many of each edge case a sample of ``people`` Claims records holds (2 at least)."""
    return {
        "missing_email": max(2, round(people * 0.02)),
        "duplicate_id": max(2, round(people * 0.015)),
        "non_standard_code": max(2, round(people * 0.015)),
        "other_departments": max(4, people // 10),
        "add_benefits": max(2, people // 20),
        "remove_benefits": max(2, people // 20),
        "terminate": max(2, people // 40),
    }


def hr_sample(people: int = 200, seed: int = SEED) -> Sample:
    """``people`` HR records of the Claims department plus ~10% of other departments.

    ~70% hold BEN_CHOICE_2026, ~10% MANAGER; the edge cases of the guide are mixed in: no work
    email, an employee id that another record already holds (a duplicate), and a non-standard
    spelling of BEN_CHOICE_2026. The same ``people`` and ``seed`` give the same sample.
    """
    if people < 20:
        raise ValueError("the demo needs at least 20 people")
    rng = random.Random(f"bridge-demo:{seed}:{people}")  # noqa: S311 - sample data, not secrets
    counts = edge_case_counts(people)
    taken: set[str] = set()

    def name() -> tuple[str, str, str]:
        given, family = rng.choice(_FIRST), rng.choice(_LAST)
        base = f"{given}.{family}".lower()
        handle, n = base, 1
        while handle in taken:
            n += 1
            handle = f"{base}{n}"
        taken.add(handle)
        return given, family, handle

    def hire_date() -> str:
        return (
            f"{rng.randint(2012, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z"
        )

    order = rng.sample(range(people), people)
    benefits = set(rng.sample(range(people), round(people * 0.7)))
    managers = set(rng.sample(range(people), max(2, round(people * 0.1))))
    odd = [i for i in order if i in benefits][: counts["non_standard_code"]]
    rest = [i for i in order if i not in odd]
    missing = rest[: counts["missing_email"]]
    duplicates = rest[counts["missing_email"] : counts["missing_email"] + counts["duplicate_id"]]
    edges = set(odd) | set(missing) | set(duplicates)
    clean = [i for i in range(people) if i not in edges]
    holders = rng.sample(clean, len(duplicates))

    records: list[HrRecord] = []
    for i in range(people):
        given, family, handle = name()
        codes = [BENEFITS] if i in benefits else []
        if i in managers:
            codes.append(MANAGER)
        edge = None
        user_name = f"{handle}@example.com"
        work: str | None = user_name
        home = None
        if i in odd:
            codes[0] = NON_STANDARD[odd.index(i) % len(NON_STANDARD)]
            edge = "non_standard_code"
        elif i in missing:
            edge, work, user_name = "missing_email", None, handle
            home = f"{handle}@home.example" if missing.index(i) % 2 == 0 else None
        elif i in duplicates:
            edge = "duplicate_id"
        records.append(
            HrRecord(
                external_id=f"E{20000 + i}",
                user_name=user_name,
                given_name=given,
                family_name=family,
                title="Claims Manager" if i in managers else rng.choice(_TITLES),
                department=PILOT_DEPARTMENT,
                role_codes=tuple(codes),
                work_email=work,
                home_email=home,
                hire_date=hire_date(),
                edge=edge,
            )
        )
    for i, holder in zip(duplicates, holders, strict=True):  # a second record, the same id
        records[i] = dataclasses.replace(
            records[i],
            external_id=records[holder].external_id,
            duplicate_of=records[holder].user_name,
        )
    for j in range(counts["other_departments"]):
        given, family, handle = name()
        department = OTHER_DEPARTMENTS[j % len(OTHER_DEPARTMENTS)]
        records.append(
            HrRecord(
                external_id=f"E{40000 + j}",
                user_name=f"{handle}@example.com",
                given_name=given,
                family_name=family,
                title=f"{department} Associate",
                department=department,
                role_codes=(BENEFITS,) if rng.random() < 0.7 else (),
                work_email=f"{handle}@example.com",
                home_email=None,
                hire_date=hire_date(),
            )
        )

    with_benefits = [i for i in clean if i in benefits]
    without = [i for i in clean if i not in benefits]
    remove = rng.sample(with_benefits, min(counts["remove_benefits"], len(with_benefits)))
    add = rng.sample(without, min(counts["add_benefits"], len(without)))
    others = [i for i in clean if i not in remove and i not in add]
    terminate = rng.sample(others, min(counts["terminate"], len(others)))
    day_two = DayTwo(
        add_benefits=tuple(records[i].external_id for i in sorted(add)),
        remove_benefits=tuple(records[i].external_id for i in sorted(remove)),
        terminate=tuple(records[i].external_id for i in sorted(terminate)),
    )
    return Sample(tuple(records), day_two)


def role_patch(codes: Sequence[str]) -> dict[str, Any]:
    """Entra-style PATCH (capitalised op) setting a person's role codes."""
    path = f"{HR}:roleCodes"
    operation: dict[str, Any] = (
        {"op": "Replace", "path": path, "value": list(codes)}
        if codes
        else {"op": "Remove", "path": path}
    )
    return {"schemas": [PATCH_OP], "Operations": [operation]}


def termination_patch(day: str) -> dict[str, Any]:
    """Entra-style termination: capitalised ops and ``"False"`` as a string (both tolerated)."""
    return {
        "schemas": [PATCH_OP],
        "Operations": [
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Replace", "path": f"{HR}:employmentStatus", "value": "terminated"},
            {"op": "Add", "path": f"{HR}:terminationDate", "value": day},
        ],
    }
