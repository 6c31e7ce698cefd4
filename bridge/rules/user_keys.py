"""The keys of a SCIM User as a fixture writes it (``given.user``), checked against the schemas.

A key is a User attribute of the schemas (``schemas/*.json``; sub-attributes of a complex one
too), ``schemas``, an extension's URN holding that extension's attributes, or an alias of the
rule file under test; names compare case-insensitively (RFC 7643 §2.1). Anything else is read
by no condition and no mapping (``bridge rules check`` refuses a mapping from an attribute the
schemas lack), so a test giving it would pass without testing anything: an error at the key,
with the attribute it most likely means.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field

from bridge.rules.attributes import UserSchema
from bridge.rules.loader import Node
from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.schemas import USER_SCHEMA

MERGE_KEY = "<<"


def nearest(word: str, candidates: Iterable[str], cutoff: float = 0.75) -> str | None:
    """The candidate ``word`` most likely means: the same but for case, else the closest."""
    folded = {c.casefold(): c for c in sorted(candidates)}
    if word.casefold() in folded:
        return folded[word.casefold()]
    close = difflib.get_close_matches(word.casefold(), list(folded), n=1, cutoff=cutoff)
    return folded[close[0]] if close else None


def _attributes(names: dict[str, str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """A schema's attributes (lowercase → name) and each complex one's sub-attributes."""
    top: dict[str, str] = {}
    subs: dict[str, dict[str, str]] = {}
    for lower, path in names.items():
        if "." in lower:
            parent, sub = lower.split(".", 1)
            subs.setdefault(parent, {})[sub] = path.split(".", 1)[1]
        else:
            top[lower] = path
    return top, subs


@dataclass
class UserKeys:
    """Checks the keys of ``given.user`` mappings; each offending key is reported once, however
    many tests merge the anchor it is written in."""

    schema: UserSchema
    reported: set[tuple[Mark, str]] = field(default_factory=set)

    def check(self, node: Node, aliases: dict[str, str], errors: list[RuleError]) -> None:
        """The keys written in the mapping ``node`` (not those it merges: they are checked
        where they are written)."""
        if not isinstance(node.value, dict):
            return
        core_top, core_subs = _attributes(self.schema.names[USER_SCHEMA.lower()])
        alias_names = {alias.lower(): alias for alias in aliases}
        for key, child in node.value.items():
            lower = key.lower()
            if key == MERGE_KEY or lower == "schemas" or lower in alias_names:
                continue
            if lower in core_top:
                self._subs(key, child, core_subs.get(lower), errors)
                continue
            if lower in self.schema.names and lower != USER_SCHEMA.lower():
                self._extension(key, child, errors)
                continue
            self._unknown(key, child, aliases, errors, core_top)

    def _extension(self, urn: str, node: Node, errors: list[RuleError]) -> None:
        if not isinstance(node.value, dict):
            return  # person_model refuses an extension that is not an object
        top, subs = _attributes(self.schema.names[urn.lower()])
        for key, child in node.value.items():
            if key == MERGE_KEY:
                continue
            if key.lower() in top:
                self._subs(f"{urn}:{key}", child, subs.get(key.lower()), errors)
                continue
            close = nearest(key, top.values())
            self._report(
                child,
                f"{urn}:{key}",
                f"the extension {urn} has no attribute {key!r}",
                f"did you mean {close!r}?"
                if close
                else f"its attributes: {', '.join(sorted(top.values()))}",
                errors,
            )

    def _subs(
        self, attribute: str, node: Node, subs: dict[str, str] | None, errors: list[RuleError]
    ) -> None:
        """The sub-attributes written in a complex attribute's value (or in each element)."""
        if subs is None:
            return
        elements = node.value if isinstance(node.value, list) else [node]
        for element in elements:
            if not isinstance(element, Node) or not isinstance(element.value, dict):
                continue
            for key, child in element.value.items():
                if key == MERGE_KEY or key.lower() in subs:
                    continue
                close = nearest(key, subs.values())
                name = attribute.rsplit(":", 1)[-1]
                self._report(
                    child,
                    f"{attribute}.{key}",
                    f"{name} has no sub-attribute {key!r}",
                    f"did you mean {name}.{close}?"
                    if close
                    else f"{name} has {', '.join(sorted(subs.values()))}",
                    errors,
                )

    def _unknown(
        self,
        key: str,
        node: Node,
        aliases: dict[str, str],
        errors: list[RuleError],
        core: dict[str, str],
    ) -> None:
        qualified = self.schema.extension_names.get(key.lower())
        if qualified is not None:
            urn, name = qualified.rsplit(":", 1)
            hint = (
                f"{name} belongs to the extension {urn}: write it under `{urn}: {{{name}: …}}`, "
                f"or add the alias `{name}: {qualified}` to the rule file's aliases"
            )
        else:
            candidates = [*core.values(), *aliases, *self.extension_urns()]
            close = nearest(key, candidates)
            listed = f" ({', '.join(sorted(aliases))})" if aliases else ""
            hint = (
                f"did you mean {close!r}?"
                if close
                else "given.user holds the schemas' User attributes (schemas/*.json), "
                f"extension blocks by URN and the rule file's aliases{listed}"
            )
        self._report(
            node,
            key,
            f"unknown attribute {key!r} in given.user: no condition or mapping reads it",
            hint,
            errors,
        )

    def extension_urns(self) -> list[str]:
        return [urn for lower, urn in self.schema.schemas.items() if lower != USER_SCHEMA.lower()]

    def _report(
        self, node: Node, key: str, message: str, hint: str, errors: list[RuleError]
    ) -> None:
        if (node.mark, key) in self.reported:
            return
        self.reported.add((node.mark, key))
        errors.append(RuleError(node.mark, message, text=key, hint=hint))


def near_miss(key: str, known: Iterable[str]) -> str | None:
    """The known name a key misspells (``firstName`` for ``firstname``), None if it is known
    or misspells none."""
    names = list(known)
    if key in names:
        return None
    return nearest(key, names, cutoff=0.8)
