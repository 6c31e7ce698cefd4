"""Who a rule file's pilot admits, and why (pure): one rule for live SCIM writes, ``bridge
plan`` / ``bridge apply`` and ``bridge explain``.

A capped pilot (``scope.pilot.max_people``) is a *draw*, not a queue. Its seats go to the
eligible people — in the scope filter, in the sample (``sample_percent``), the pilot not
ended — by the stable hash rank :func:`~bridge.rules.engine.sample_rank` of their externalId
(else their id). An IdP's initial push arrives sorted (by name, by creation date), so filling
seats in arrival order would train a biased sample that depends on timing. A live write cannot
know who else is coming, so it never fills a capped pilot: a newcomer waits for the next draw,
which is ``bridge plan`` + ``bridge apply`` over the stored population — free seats
(``max_people`` minus the people admitted) go to the candidates in hash order. Someone admitted
(projected in scope) stays admitted while the scope filter matches them; someone seated before
who left the scope (a termination, a lost role code, later reverted or rehired) is *returning*:
they take a free seat back before any newcomer is drawn — on a live write while the pilot has a
free seat, and first in a draw. A pilot without a cap is per person (the sample is a hash of
the person alone), so live writes admit at once.

:func:`admission` is that rule for one person; :func:`draw` applies it to a population.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import date

from bridge.rules.engine import in_sample
from bridge.rules.engine import sample_rank
from bridge.rules.model import Pilot

ADMITTED = "admitted to the pilot"
NO_PILOT = "no pilot: everyone in the scope filter"
OUTSIDE_FILTER = "outside the scope filter"
WAITING = "waiting for the draw (the next `bridge apply`)"
RETURNING = "back in the pilot: seated before, and a seat is free"


@dataclass(frozen=True)
class Admission:
    """Whether a rule file's scope takes one person, and why (for ``bridge explain``)."""

    admitted: bool
    reason: str


@dataclass(frozen=True)
class Draw:
    """A capped pilot's draw over a population, and who the scope takes after it.

    ``ranked``: the draw's candidates (eligible, not yet admitted) → their rank, 1-based, by
    hash; ``free_seats``: ``max_people`` minus the people already admitted; ``admitted``:
    everyone the scope takes — those already admitted, the drawn, or, without a cap, every
    eligible person.
    """

    ranked: Mapping[str, int] = field(default_factory=dict)
    free_seats: int = 0
    admitted: frozenset[str] = frozenset()

    @property
    def candidates(self) -> int:
        return len(self.ranked)

    @property
    def drawn(self) -> int:
        """How many candidates the draw seats."""
        return min(self.free_seats, self.candidates)


def _seats(count: int) -> str:
    return f"{count} free seat" + ("" if count == 1 else "s")


def _ineligible(pilot: Pilot, key: str, today: date) -> str | None:
    """Why someone in the scope filter, not yet admitted, cannot be (None: they can)."""
    if pilot.ends is not None and today > pilot.ends:
        return f"the pilot ended on {pilot.ends.isoformat()}"
    if not in_sample(pilot, key):
        return f"outside the {pilot.sample_percent:g}% sample"
    return None


def admission(
    pilot: Pilot | None,
    person: str,
    key: str,
    *,
    admitted: bool,
    in_filter: bool,
    today: date,
    draw: Draw | None = None,
    returning: bool = False,
    seat_free: bool = False,
) -> Admission:
    """Whether the scope takes ``person`` (ranked by ``key``: externalId, else id), and why.

    ``admitted``: the person is projected in scope already (they stay); ``in_filter``: the
    scope filter matches them (no filter: True); ``draw``: the draw over the population (a
    plan), or None on a live write — which never fills a capped pilot: an eligible newcomer
    waits for the draw. ``returning``: seated before, out of scope since; on a live write
    they take a seat back when ``seat_free`` (in a draw they rank before every newcomer).
    """
    if not in_filter:
        return Admission(False, OUTSIDE_FILTER)
    if pilot is None:
        return Admission(True, NO_PILOT)
    if admitted:
        return Admission(True, ADMITTED)
    why_not = _ineligible(pilot, key, today)
    if why_not is not None:
        return Admission(False, why_not)
    if pilot.max_people is None:
        return Admission(True, ADMITTED)
    if draw is None:
        if returning and seat_free:
            return Admission(True, RETURNING)
        return Admission(False, WAITING)
    rank = draw.ranked.get(person)
    if rank is None:
        return Admission(False, WAITING)
    drawn = f"rank {rank} of {draw.candidates} for {_seats(draw.free_seats)}"
    if rank <= draw.free_seats:
        return Admission(True, f"drawn: {drawn} (admitted by the next `bridge apply`)")
    return Admission(False, f"not drawn: {drawn}: the pilot is full ({pilot.max_people} people)")


def draw(
    pilot: Pilot | None,
    population: Iterable[tuple[str, str]],
    *,
    staying: Collection[str],
    today: date,
    returning: Collection[str] = (),
) -> Draw:
    """The draw over ``population``: (person id, key) of everyone the scope filter matches.

    ``staying``: who is admitted already (projected in scope). Candidates are ranked by
    (hash of the key, id) — the same members whatever order the people were stored in — and
    whom :func:`admission` takes with that draw is the result. ``returning``: people seated
    before and out of scope since; eligible again, they rank before every newcomer.
    """
    people = list(population)
    seating = Draw()
    if pilot is not None and pilot.max_people is not None:
        candidates = sorted(
            (person not in returning, sample_rank(pilot, key), person)
            for person, key in people
            if person not in staying and _ineligible(pilot, key, today) is None
        )
        taken = sum(1 for person, _ in people if person in staying)
        seating = Draw(
            {person: rank for rank, (_, _, person) in enumerate(candidates, start=1)},
            max(pilot.max_people - taken, 0),
        )
    admitted = frozenset(
        person
        for person, key in people
        if admission(
            pilot,
            person,
            key,
            admitted=person in staying,
            in_filter=True,
            today=today,
            draw=seating,
        ).admitted
    )
    return Draw(seating.ranked, seating.free_seats, admitted)
