"""The account fields each target kind takes from a mapping, and a mapping key checked against them.

A ``moodle`` target takes Moodle's standard user fields (``core_user_create_users`` /
``_update_users``, Moodle 4.3), ``auth``, and the custom profile fields the target declares
(option ``custom_profile_fields``; ``profile_fields`` renames an attribute's field). A ``canvas``
target takes what ``bridge.targets.canvas_api.Profile`` reads. ``rest`` and ``scim`` targets
template any attribute, so none is checked. Pure data: ``bridge.targets.moodle_ws`` imports the
Moodle fields from here, so that the checker and the target never disagree.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.rules.model import Severity
from bridge.rules.model import Target

MOODLE_USER_FIELDS = frozenset(
    ("username", "firstname", "lastname", "email", "idnumber", "institution", "department")
    + ("city", "country", "lang", "timezone", "description", "phone1", "phone2", "address")
    + ("middlename", "alternatename", "firstnamephonetic", "lastnamephonetic", "interests")
    + ("maildisplay", "mailformat", "calendartype", "theme")
)
"""Standard user fields of core_user_create_users / core_user_update_users (Moodle 4.3); any
other attribute goes to a custom profile field, which Moodle ignores if it does not exist."""

CUSTOM_PROFILE_FIELDS = "custom_profile_fields"
"""The ``moodle`` target option listing the custom profile fields (short names) the site has."""

PROFILE_FIELD_RENAMES = "profile_fields"
"""The ``moodle`` target option renaming an attribute's profile field (``{title: jobtitle}``)."""

CANVAS_USER_FIELDS = frozenset({"idnumber", "username", "email", "firstname", "lastname", "name"})
"""What a ``canvas`` target reads from an account (``Profile.of``): the SIS id, the login
(``username``, else ``email``), the names (``sortable_name`` is built from them), the email."""

_MOODLE_EXAMPLES = "username, firstname, lastname, email, idnumber, department, city, lang, "
# Why a key the target kind has no field for goes nowhere, where there is more to say than
# "did you mean". Moodle: user_row never sends these (bridge.targets.moodle_ws).
_MOODLE_NOT_MAPPED = {
    "password": "the bridge never sends a password: people sign in through the auth plugin "
    "(`auth:`), and an internal auth gets a password Moodle mails (createpassword)",
    "suspended": "the bridge suspends an account when its person leaves the scope or becomes "
    "inactive (`active eq false`); a mapping cannot set it",
}
# Canvas: its API's names for what the mapping calls otherwise.
_CANVAS_NAMES = {
    "sis_user_id": "idnumber",
    "unique_id": "username",
    "login_id": "username",
    "short_name": "name",
}
_CANVAS_NOT_MAPPED = {
    "auth": "Canvas logins take their authentication provider from the target option "
    "authentication_provider_id, not from the mapping",
}


@dataclass(frozen=True)
class FieldProblem:
    """A mapping key the target has no field for: the message, a hint and how bad it is."""

    message: str
    hint: str
    severity: Severity = Severity.error


def _suggest(key: str, candidates: Iterable[str]) -> str | None:
    folded = {c.casefold(): c for c in sorted(candidates)}
    if key.casefold() in folded:
        return folded[key.casefold()]
    close = difflib.get_close_matches(key.casefold(), list(folded), n=1, cutoff=0.75)
    return folded[close[0]] if close else None


def _text_list(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


@dataclass(frozen=True)
class TargetFields:
    """The fields a target takes from a mapping; ``custom`` None: the target declares none."""

    target: Target
    standard: frozenset[str]
    custom: frozenset[str] | None = None
    renames: dict[str, str | None] | None = None

    def short_name(self, key: str) -> str | None:
        """The custom profile field a key is written to (None: a rename to nothing drops it)."""
        renames = self.renames or {}
        return renames.get(key, key)

    def problem(self, key: str) -> FieldProblem | None:
        """Why a mapping key reaches no field of the target, or None when it reaches one."""
        if self.target.kind == "canvas":
            return self._canvas(key)
        return self._moodle(key)

    def _moodle(self, key: str) -> FieldProblem | None:
        if key in self.standard or key == "auth":
            return None
        kind, name = self.target.kind, self.target.name
        if key in _MOODLE_NOT_MAPPED:
            return FieldProblem(
                f"{kind} has no user field {key} a mapping can set", _MOODLE_NOT_MAPPED[key]
            )
        short = self.short_name(key)
        if not short:
            return None  # renamed to nothing: dropped on purpose
        renamed = key in (self.renames or {})
        custom = self.custom
        declared = ", ".join(sorted(custom)) if custom else "none"
        takes = (
            f"target {name!r} takes Moodle's user fields ({_MOODLE_EXAMPLES}… rules/README.md "
            f"lists all {len(self.standard)}), auth, and the custom profile fields of its option "
            f"{CUSTOM_PROFILE_FIELDS} ({declared})"
        )
        if custom is None:
            if renamed:
                return None  # the target names the field: the preflight checks the site has it
            near = _suggest(key, self.standard)
            if near is not None:
                return FieldProblem(f"{kind} has no user field {key}: did you mean {near}?", takes)
            return FieldProblem(
                f"mapping {key!r} goes to a custom profile field {short!r}, which target "
                f"{name!r} does not declare",
                f"list the custom profile fields the site defines in the target's option "
                f"{CUSTOM_PROFILE_FIELDS} (e.g. `{CUSTOM_PROFILE_FIELDS}: [{short}]`): Moodle "
                "drops a field it does not have without a word",
                Severity.warning,
            )
        if short in custom:
            return None
        if renamed:
            return FieldProblem(
                f"mapping {key!r} goes to the custom profile field {short!r} (option "
                f"{PROFILE_FIELD_RENAMES}), which target {name!r} does not declare",
                f"add {short} to {CUSTOM_PROFILE_FIELDS} once the site defines it (it lists "
                f"{declared})",
            )
        known = [*self.standard, "auth", *custom, *(self.renames or {})]
        suggestion = _suggest(key, [k for k in known if k != key])
        found = f": did you mean {suggestion}?" if suggestion is not None else ""
        return FieldProblem(
            f"{kind} has no user field {key}{found}",
            f"{takes}; list a custom profile field there once the site defines it",
        )

    def _canvas(self, key: str) -> FieldProblem | None:
        if key in self.standard:
            return None
        kind = self.target.kind
        if key in _CANVAS_NOT_MAPPED:
            return FieldProblem(f"{kind} has no user field {key}", _CANVAS_NOT_MAPPED[key])
        suggestion = _CANVAS_NAMES.get(key.lower()) or _suggest(key, self.standard)
        found = f": did you mean {suggestion}?" if suggestion is not None else ""
        return FieldProblem(
            f"{kind} has no user field {key}{found}",
            f"a canvas target takes {', '.join(sorted(self.standard))} (the sortable name is "
            "built from firstname and lastname); Canvas's users API keeps no other attribute, "
            "so nothing would be sent",
        )


def target_fields(target: Target) -> TargetFields | None:
    """The fields of a ``moodle`` or ``canvas`` target; None for a kind that templates anything."""
    if target.kind == "canvas":
        return TargetFields(target, CANVAS_USER_FIELDS)
    if target.kind != "moodle":
        return None
    declared = target.options.get(CUSTOM_PROFILE_FIELDS)
    custom = frozenset(_text_list(declared)) if declared is not None else None
    renames_option = target.options.get(PROFILE_FIELD_RENAMES)
    renames = (
        {str(k): (str(v) if v else None) for k, v in renames_option.items()}
        if isinstance(renames_option, dict)
        else None
    )
    return TargetFields(target, MOODLE_USER_FIELDS, custom, renames)
