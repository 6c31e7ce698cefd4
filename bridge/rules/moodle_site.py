"""What a stock Moodle site accepts from a rule set (shared/LMS.md, observed on Moodle 4.3).

Usernames: lowercase ASCII letters, digits and ``_ - . @`` unless the site turns on
``extendedusernamechars``; ``auth``: a plugin the site has (a stock site has no ``saml2``);
``custom_profile_fields``: short names a profile field can have (letters, digits and ``_``).
Each is checked here, from the rules alone, so that a value Moodle would refuse for everyone
shows at the mapping's file:line:col; ``bridge targets check`` asks the site itself
(``bridge.targets.moodle_preflight``, which knows the same auth lists).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from bridge.rules.findings import Report
from bridge.rules.model import FieldMapping
from bridge.rules.model import Severity
from bridge.rules.model import Target
from bridge.rules.model import Transform
from bridge.rules.target_fields import CUSTOM_PROFILE_FIELDS
from bridge.rules.transforms import TransformError
from bridge.rules.transforms import apply
from bridge.schemas import USER_SCHEMA

STOCK_AUTHS = frozenset(
    {"manual", "email", "oauth2", "cas", "ldap", "shibboleth", "lti", "nologin", "none", "db"}
)
"""The auth plugins every Moodle 4.3 site ships that accounts can be created with (auth/*)."""

REFUSED_AUTHS = frozenset({"mnet", "webservice"})
"""Stock plugins ``core_user_create_users`` refuses whatever the site (user/externallib.php)."""

INSTALLED_AUTHS = "auth_plugins"
"""The target option listing the auth plugins installed beyond the stock ones (``[saml2]``)."""

EXTENDED_USERNAMES = "extended_username_chars"
"""The target option saying the site has ``extendedusernamechars`` on (any letter allowed)."""

_ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
# Identifiers issued as codes by the IdP or the HR system (E12345, a GUID), not typed names:
# lowercased, they are usernames Moodle takes as they are.
_ASCII_SOURCES = frozenset(
    name.lower()
    for name in (
        "id",
        "externalId",
        f"{USER_SCHEMA}:id",
        f"{USER_SCHEMA}:externalId",
        f"{_ENTERPRISE}:employeeNumber",
    )
)
_FOLD_EXAMPLE = "józef.nowak@example.com → jozef.nowak@example.com"
_SHORTNAME = re.compile(r"[A-Za-z0-9_]+")  # a profile field's short name (profile_define_base)


def constant(mapping: FieldMapping) -> Any:
    """The value of a ``value:`` mapping after its transforms (None if it has a source or a
    transform refuses the constant)."""
    if mapping.source is not None:
        return None
    value = mapping.value
    try:
        for transform in mapping.transforms:
            value = apply(value, transform.name, transform.argument)
    except (TransformError, ValueError, TypeError):
        return None
    return value


def _ascii_text(argument: Any) -> bool:
    if isinstance(argument, str):
        return argument.isascii()
    if isinstance(argument, dict):
        return all(_ascii_text(v) for v in argument.values())
    if isinstance(argument, list):
        return all(_ascii_text(v) for v in argument)
    return True


def _keeps_ascii(transform: Transform) -> bool:
    """Whether a step after ``ascii`` keeps the text ASCII: it adds no text of its own but
    what its argument holds (a map's keys and a replace's pattern only match)."""
    argument = transform.argument
    if transform.name == "replace" and isinstance(argument, dict):
        argument = argument.get("with", "")
    return _ascii_text(argument)


def folds_to_ascii(transforms: tuple[Transform, ...]) -> bool:
    """Whether a pipeline's result is ASCII whatever the input: an ``ascii`` step, and no step
    after it that can add other letters."""
    names = [t.name for t in transforms]
    if "ascii" not in names:
        return False
    last = len(names) - 1 - names[::-1].index("ascii")
    return all(_keeps_ascii(t) for t in transforms[last + 1 :])


def ascii_by_schema(source: str | None) -> bool:
    """Whether a source is an identifier issued as an ASCII code (externalId, employeeNumber)."""
    return source is not None and source.lower() in _ASCII_SOURCES


def _lowercase(mapping: FieldMapping) -> bool:
    if mapping.source is None:
        value = constant(mapping)
        return not isinstance(value, str) or value == value.lower()
    cases = [t.name for t in mapping.transforms if t.name in ("lower", "upper")]
    return bool(cases) and cases[-1] == "lower"


@dataclass(frozen=True)
class MoodleSite:
    """The checks of one ``moodle`` target and the mappings that drive it, through ``add``."""

    target: Target
    add: Report

    @property
    def extended_usernames(self) -> bool:
        return self.target.options.get(EXTENDED_USERNAMES) is True

    def options(self) -> None:
        """The target's own options: ``auth`` (the default auth kind) and the username flag."""
        flag = self.target.options.get(EXTENDED_USERNAMES)
        if flag is not None and not isinstance(flag, bool):
            self.add(
                self.target.mark,
                f"option {EXTENDED_USERNAMES!r} of target {self.target.name!r} must be "
                "true or false",
                text=f"{EXTENDED_USERNAMES}: {flag}",
                hint="true only where the site has Site administration → Security → Site "
                "security settings → extendedusernamechars on",
                keys=("options", EXTENDED_USERNAMES),
            )
        auth = self.target.options.get("auth")
        if isinstance(auth, str):
            self.auth(auth, f"option 'auth' of target {self.target.name!r}", ("options", "auth"))
        self.custom_profile_fields()

    def custom_profile_fields(self) -> None:
        """The option listing the site's custom profile fields: a list of short names."""
        fields = self.target.options.get(CUSTOM_PROFILE_FIELDS)
        where = f"option {CUSTOM_PROFILE_FIELDS!r} of target {self.target.name!r}"
        keys = ("options", CUSTOM_PROFILE_FIELDS)
        if fields is None:
            return
        if not isinstance(fields, list):
            self.add(
                self.target.mark,
                f"{where} must be a list of profile field short names",
                text=f"{CUSTOM_PROFILE_FIELDS}: {fields}",
                hint=f"e.g. `{CUSTOM_PROFILE_FIELDS}: [title, roles]`: the short names under "
                "Site administration → Users → Accounts → User profile fields",
                keys=keys,
            )
            return
        for field in fields:
            if not isinstance(field, str) or not _SHORTNAME.fullmatch(field):
                self.add(
                    self.target.mark,
                    f"{where} lists {field!r}, which cannot be a profile field short name",
                    text=str(field),
                    hint="Moodle short names are letters, digits and _ only",
                    keys=keys,
                )

    def mapping(self, mapping: FieldMapping) -> None:
        if mapping.attribute == "username":
            self.username(mapping)
        elif mapping.attribute == "auth":
            value = constant(mapping)
            if isinstance(value, str):
                self.auth(value, "mapping 'auth'", ("value",), mapping)

    def username(self, mapping: FieldMapping) -> None:
        text = mapping.source or str(mapping.value)
        if not _lowercase(mapping):
            self.add(
                mapping.mark,
                "Moodle usernames must be lowercase: mapping 'username' may produce capitals",
                text=text,
                hint="add `transforms: [trim, lower]` (Moodle refuses the whole account batch)",
            )
        if self.extended_usernames:
            return
        if mapping.source is None:
            value = constant(mapping)
            ascii_ok = not isinstance(value, str) or value.isascii()
        else:
            ascii_ok = folds_to_ascii(mapping.transforms) or ascii_by_schema(mapping.source)
        if not ascii_ok:
            self.add(
                mapping.mark,
                "Moodle usernames must be ASCII: mapping 'username' may produce letters "
                "Moodle refuses (í, ü, ø…)",
                text=text,
                hint=f"add `ascii` to its transforms, e.g. [trim, ascii, lower] ({_FOLD_EXAMPLE}), "
                "or map it from an ASCII identifier (externalId, employeeNumber); on a site with "
                f"extendedusernamechars on, set `{EXTENDED_USERNAMES}: true` in the target's "
                "options",
                severity=Severity.warning,
            )

    def auth(
        self, auth: str, where: str, keys: tuple[str, ...], mapping: FieldMapping | None = None
    ) -> None:
        mark = mapping.mark if mapping is not None else self.target.mark
        installed = self.target.options.get(INSTALLED_AUTHS)
        listed = isinstance(installed, list) and auth in installed
        if auth in REFUSED_AUTHS:
            self.add(
                mark,
                f"{where} is {auth!r}: Moodle creates no account with it",
                text=auth,
                hint="core_user_create_users refuses auth mnet and webservice; use a plugin "
                "people sign in with (oauth2 is SSO through the IdP)",
                keys=keys,
            )
        elif auth not in STOCK_AUTHS and not listed:
            close = difflib.get_close_matches(auth.lower(), sorted(STOCK_AUTHS), n=1, cutoff=0.8)
            fix = f"did you mean {close[0]!r}? " if close else ""
            self.add(
                mark,
                f"{where} is {auth!r}, which is not an auth plugin of a stock Moodle site",
                text=auth,
                hint=f"{fix}accounts are created with auth {auth!r} only where its plugin is "
                "installed and enabled on the site (`bridge targets check` asks the site); "
                f"list it in the target's option {INSTALLED_AUTHS} once it is. Stock Moodle "
                f"has {', '.join(sorted(STOCK_AUTHS))} — oauth2 is SSO through the IdP",
                keys=keys,
                severity=Severity.warning,
            )
        default = self.target.options.get("auth")
        if mapping is not None and isinstance(default, str) and default != auth:
            self.add(
                mark,
                f"mapping 'auth' is {auth!r} but target {self.target.name!r} has option auth "
                f"{default!r} (at {self.target.mark})",
                text=auth,
                hint="the mapping wins for this rule file's accounts; set the auth kind in one "
                "place (the mapping, or the target's option for every rule file)",
                keys=keys,
                severity=Severity.warning,
            )
