"""The verdicts of a rule file's conditions on one person, by scim2-models' own evaluator.

This is the single-person side of DESIGN §6: the SCIM server's in-memory matching,
``ScimFilter[Model](text).match(resource)``, applied to the scope filter and to every
``when`` of a rule file (the population side is the SQL translator, ``bridge.store.filters``).
The result is the ``verdicts`` mapping ``engine.desired_state`` takes: condition text, as stored
in the model (aliases expanded), → whether the person matches it.

Failure policy (decided here, relied upon by ``bridge rules test`` and ``bridge explain``):

- A condition that cannot be bound to the User model — an attribute the schemas do not
  declare, an operator or a value its attribute cannot take — is a **False verdict plus a
  reported problem**, never an exception: one bad condition must not stop the other rule
  files, nor the SCIM write that triggered the projection. The SQL translator refuses the
  same conditions (``invalidFilter``), so ``bridge rules check`` should reject them upfront
  (``check_conditions`` gives the errors with their file:line:col).
- Unknown attributes are checked when the condition is compiled (strictly, over the whole
  filter), not while matching, so the report does not depend on which branch of an
  ``and``/``or`` the evaluator happened to walk for this person.
- Compiled filters are cached per (model, text): a rule file's conditions are parsed and
  bound once per process, not once per person.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from scim2_models import Resource
from scim2_models import SCIMException
from scim2_models import ScimFilter

from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.rules.model import RuleFile
from bridge.schemas import TOLERANT_POLICY
from bridge.schemas import Catalog

ModelType = type[Resource[Any]]


@dataclass(frozen=True)
class ConditionProblem:
    """A condition that could not be evaluated (its verdict is False)."""

    condition: str
    reason: str

    def __str__(self) -> str:
        return f"condition {self.condition!r} cannot be evaluated: {self.reason}"


def person_model(catalog: Catalog, doc: dict[str, Any]) -> Resource[Any]:
    """The person's SCIM JSON validated into ``catalog.user`` (extensions included).

    ``doc`` is what the rules read: the stored document plus ``id``, ``externalId`` and
    optionally ``groups: [{value, display, type}]``. Validation runs under the server's
    tolerant policy, so attributes the schemas do not declare are ignored; a value of the
    wrong type raises ``pydantic.ValidationError`` (a ``ValueError``).
    """
    return catalog.user.model_validate(doc, scim_policy=TOLERANT_POLICY)


def _detail(exc: Exception) -> str:
    detail = getattr(exc, "detail", None)
    return str(detail) if detail else str(exc)


@dataclass(frozen=True)
class Compiled:
    """A condition bound to a model, or why it cannot be (a ScimFilter *is* a str)."""

    filter: ScimFilter[Any] | None
    error: str = ""


@lru_cache(maxsize=1024)
def compile_condition(model_type: ModelType, text: str) -> Compiled:
    """The filter bound to ``model_type``, or why it cannot be (failures are cached too)."""
    try:
        bound: ScimFilter[Any] = ScimFilter[model_type](text)  # type: ignore[valid-type]
        # Creating a bound filter checks operators and values but leaves unknown attributes
        # to evaluate to false (RFC 7644 §3.4.2.1, for endpoints covering several types).
        # A rule names one resource type, so an unknown attribute is a mistake: check
        # strictly, as the SQL translator does. (Private API; scim2-models is pinned < 0.13.)
        bound._validate_semantics(strict=True)
    except (SCIMException, ValueError, TypeError) as exc:
        return Compiled(None, _detail(exc))
    return Compiled(bound)


def conditions(rule_file: RuleFile) -> list[tuple[str, Mark]]:
    """Every condition text of a rule file (scope first), with where it was written."""
    found: list[tuple[str, Mark]] = []
    if rule_file.scope.filter is not None:
        found.append((rule_file.scope.filter, rule_file.scope.mark))
    found.extend((assignment.when, assignment.mark) for assignment in rule_file.assignments)
    return found


def evaluate(
    rule_file: RuleFile,
    model_instance: Resource[Any],
    model_type: ModelType,
    *,
    problems: list[ConditionProblem] | None = None,
) -> dict[str, bool]:
    """Condition text → verdict, for the scope filter and every ``when`` of ``rule_file``.

    A condition that cannot be compiled or matched is False; when ``problems`` is given,
    a ``ConditionProblem`` is appended to it for each such condition (once per text).
    """
    verdicts: dict[str, bool] = {}
    for text, _ in conditions(rule_file):
        if text in verdicts:
            continue
        compiled = compile_condition(model_type, text)
        if compiled.filter is None:
            verdicts[text] = False
            if problems is not None:
                problems.append(ConditionProblem(text, compiled.error))
            continue
        try:
            verdicts[text] = bool(compiled.filter.match(model_instance))
        except (SCIMException, ValueError, TypeError) as exc:
            verdicts[text] = False
            if problems is not None:
                problems.append(ConditionProblem(text, _detail(exc)))
    return verdicts


def check_conditions(rule_file: RuleFile, model_type: ModelType) -> list[RuleError]:
    """Conditions of ``rule_file`` that cannot be bound to ``model_type``, at file:line:col.

    For ``bridge rules check``: the loader checks filter syntax only; this checks the
    attribute names, operators and values against the schemas.
    """
    errors: list[RuleError] = []
    for text, mark in conditions(rule_file):
        compiled = compile_condition(model_type, text)
        if compiled.filter is None:
            errors.append(
                RuleError(
                    mark,
                    f"condition cannot be evaluated: {compiled.error}",
                    text=text,
                    hint="check the attribute name against schemas/ (or an alias)",
                )
            )
    return errors
