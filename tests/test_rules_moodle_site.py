"""`bridge rules check` against what a stock Moodle 4.3 site refuses (shared/LMS.md, "Observed on
a stock Moodle 4.3 site"): usernames that are not lowercase ASCII, auth plugins the site lacks,
and emails folded into another mailbox. Each at file:line:col, with a hint.

A value the site *may* refuse is a warning: ``bridge rules check`` shows it, the rules still
load. Rule files start with a three-line header, so their body starts on line 4.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from bridge.rules.book import RuleBook
from bridge.rules.check import blocking
from bridge.rules.check import check_directory
from bridge.rules.check import errors_as_json
from bridge.rules.check import render_errors
from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors
from bridge.rules.model import Severity
from bridge.schemas import Catalog

ASCII_WARNING = (
    "Moodle usernames must be ASCII: mapping 'username' may produce letters Moodle refuses "
    "(í, ü, ø…)"
)


def targets(directory: Path, options: str = "") -> None:
    """targets.yaml: a moodle target (on line 3; ``options`` as YAML lines under it, the first
    on line 7) and a canvas one."""
    body = (
        "targets:\n"
        "  moodle:\n"
        "    kind: moodle\n"
        "    base_url: http://moodle.example\n"
        "    credentials: {token: env:MOODLE_TOKEN}\n"
    )
    if options:
        body += "    options:\n" + textwrap.indent(textwrap.dedent(options), "      ")
    body += "  canvas:\n    kind: canvas\n    base_url: http://canvas.example\n"
    (directory / "targets.yaml").write_text(body, encoding="utf-8")


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    targets(tmp_path)
    return tmp_path


def write(directory: Path, file_name: str, mapping: str, *, target: str = "moodle") -> None:
    """A rule file with the header on lines 1-3, ``mapping:`` on 4, its first entry on 5."""
    name = file_name.removesuffix(".yaml")
    header = f"version: 1\nname: {name}\ntarget: {target}\nmapping:\n"
    body = textwrap.indent(textwrap.dedent(mapping).strip("\n") + "\n", "  ")
    (directory / file_name).write_text(header + body, encoding="utf-8")


def check_all(directory: Path, catalog: Catalog) -> list[RuleError]:
    """Errors and warnings, as `bridge rules check` shows them."""
    _, found = check_directory(directory, catalog, relative_to=directory, with_warnings=True)
    return found


def only(found: list[RuleError]) -> RuleError:
    assert len(found) == 1, render_errors(found)
    return found[0]


# --- usernames: lowercase ASCII letters, digits and _ - . @ -----------------------------------


def test_a_username_that_may_hold_accents_is_a_warning(rules: Path, catalog: Catalog) -> None:
    write(rules, "names.yaml", "username: {from: userName, transforms: [trim, lower]}")
    warning = only(check_all(rules, catalog))
    assert str(warning.mark) == "names.yaml:5:13"
    assert warning.severity == Severity.warning
    assert warning.message == ASCII_WARNING
    assert warning.text == "userName"
    assert "[trim, ascii, lower]" in warning.hint
    assert "józef.nowak@example.com → jozef.nowak@example.com" in warning.hint
    assert "extended_username_chars: true" in warning.hint
    # Left out unless asked for: the rule book (and `bridge serve`) load these rules.
    ruleset, errors = check_directory(rules, catalog, relative_to=rules)
    assert errors == [] and ruleset is not None
    assert blocking(check_all(rules, catalog)) == []


def test_a_username_with_neither_ascii_nor_lower_is_an_error_and_a_warning(
    rules: Path, catalog: Catalog
) -> None:
    write(rules, "upper.yaml", "username: userName")
    found = check_all(rules, catalog)
    assert [(str(f.mark), f.severity.value, f.message.split(":")[0]) for f in found] == [
        ("upper.yaml:5:13", "error", "Moodle usernames must be lowercase"),
        ("upper.yaml:5:13", "warning", "Moodle usernames must be ASCII"),
    ]


@pytest.mark.parametrize(
    "mapping",
    [
        "username: {from: userName, transforms: [trim, ascii, lower]}",
        "username: {from: userName, transforms: [lower, ascii]}",
        "username: {from: userName, transforms: [trim, ascii, lower, "
        "{replace: {pattern: '[^a-z0-9_.@-]', with: ''}}]}",
        "username: {from: userName, transforms: [ascii, lower, {template: '{value}.lms'}]}",
        "username: {from: userName, transforms: [ascii, lower, {map: {Ø: o}}]}",  # keys only match
        "username: {from: externalId, transforms: [trim, lower]}",
        "username: {from: 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:"
        "employeeNumber', transforms: [lower]}",
        "username: {value: 'pilot-user'}",
    ],
)
def test_usernames_moodle_takes(rules: Path, catalog: Catalog, mapping: str) -> None:
    write(rules, "ok.yaml", mapping)
    assert check_all(rules, catalog) == []


@pytest.mark.parametrize(
    "mapping",
    [
        "username: {from: name.familyName, transforms: [lower]}",
        "username: {from: userName, transforms: [ascii, lower, {template: '{value}.bjørn'}]}",
        "username: {from: userName, transforms: [ascii, lower, {map: {x: ø}}]}",
        "username: {from: userName, transforms: [ascii, lower, {replace: {pattern: o, with: ø}}]}",
        "username: {from: userName, transforms: [ascii, lower, {default: 'ønsket'}]}",
        "username: {value: 'jørgen'}",
    ],
)
def test_usernames_moodle_may_refuse(rules: Path, catalog: Catalog, mapping: str) -> None:
    write(rules, "maybe.yaml", mapping)
    warning = only(check_all(rules, catalog))
    assert (str(warning.mark), warning.message) == ("maybe.yaml:5:13", ASCII_WARNING)


def test_a_site_with_extended_username_chars_takes_any_letter(
    tmp_path: Path, catalog: Catalog
) -> None:
    targets(tmp_path, "extended_username_chars: true\n")
    write(tmp_path, "names.yaml", "username: {from: userName, transforms: [trim]}")
    error = only(check_all(tmp_path, catalog))
    assert error.severity == Severity.error, "still lowercase: Moodle lowercases every username"
    assert error.message.startswith("Moodle usernames must be lowercase")


def test_extended_username_chars_is_true_or_false(tmp_path: Path, catalog: Catalog) -> None:
    targets(tmp_path, "extended_username_chars: 'yes'\n")
    write(tmp_path, "names.yaml", "username: {from: userName, transforms: [trim, ascii, lower]}")
    error = only(check_all(tmp_path, catalog))
    assert str(error.mark) == "targets.yaml:7:32"
    assert error.severity == Severity.error
    assert (
        error.message == "option 'extended_username_chars' of target 'moodle' must be true or false"
    )
    assert "extendedusernamechars" in error.hint


def test_other_targets_are_not_held_to_moodle_usernames(rules: Path, catalog: Catalog) -> None:
    write(rules, "canvas.yaml", "username: {from: userName}", target="canvas")
    assert check_all(rules, catalog) == []


# --- auth: a plugin the site has -----------------------------------------------------------------


def test_an_auth_plugin_a_stock_site_lacks_is_a_warning(rules: Path, catalog: Catalog) -> None:
    write(rules, "sso.yaml", "auth: {value: saml2, on: create}")
    warning = only(check_all(rules, catalog))
    assert str(warning.mark) == "sso.yaml:5:17", "at the value"
    assert warning.severity == Severity.warning
    assert warning.message == (
        "mapping 'auth' is 'saml2', which is not an auth plugin of a stock Moodle site"
    )
    assert warning.text == "saml2"
    assert "only where its plugin is installed and enabled on the site" in warning.hint
    assert "`bridge targets check`" in warning.hint
    assert "list it in the target's option auth_plugins once it is" in warning.hint
    assert "oauth2 is SSO through the IdP" in warning.hint
    assert "did you mean" not in warning.hint


@pytest.mark.parametrize(
    "auth",
    ["manual", "email", "oauth2", "cas", "ldap", "shibboleth", "lti", "nologin", "none", "db"],
)
def test_stock_auth_plugins_pass(rules: Path, catalog: Catalog, auth: str) -> None:
    write(rules, "stock.yaml", f"auth: {{value: {auth}, on: create}}")
    assert check_all(rules, catalog) == []


@pytest.mark.parametrize("auth", ["mnet", "webservice"])
def test_auth_plugins_moodle_never_creates_accounts_with(
    rules: Path, catalog: Catalog, auth: str
) -> None:
    write(rules, "ws.yaml", f"auth: {{value: {auth}}}")
    error = only(check_all(rules, catalog))
    assert error.severity == Severity.error
    assert error.message == f"mapping 'auth' is {auth!r}: Moodle creates no account with it"
    assert "core_user_create_users refuses" in error.hint


def test_an_installed_plugin_listed_on_the_target_is_taken(
    tmp_path: Path, catalog: Catalog
) -> None:
    targets(tmp_path, "auth_plugins: [saml2]\n")
    write(tmp_path, "sso.yaml", "auth: {value: saml2, on: create}")
    assert check_all(tmp_path, catalog) == []


def test_a_misspelt_auth_plugin_gets_a_suggestion(rules: Path, catalog: Catalog) -> None:
    write(rules, "typo.yaml", "auth: {value: Manual}")
    warning = only(check_all(rules, catalog))
    assert warning.hint.startswith("did you mean 'manual'? ")


def test_the_auth_option_of_the_target(tmp_path: Path, catalog: Catalog) -> None:
    targets(tmp_path, "student_role_id: 5\nauth: saml2\n")
    write(tmp_path, "a.yaml", "idnumber: {from: externalId}")
    warning = only(check_all(tmp_path, catalog))
    assert str(warning.mark) == "targets.yaml:8:13", "at the option's value"
    assert warning.message == (
        "option 'auth' of target 'moodle' is 'saml2', which is not an auth plugin of a stock "
        "Moodle site"
    )


def test_the_auth_kind_is_set_in_one_place(tmp_path: Path, catalog: Catalog) -> None:
    targets(tmp_path, "auth: manual\n")
    write(tmp_path, "a.yaml", "auth: {value: oauth2, on: create}")
    warning = only(check_all(tmp_path, catalog))
    assert str(warning.mark) == "a.yaml:5:17"
    assert warning.message == (
        "mapping 'auth' is 'oauth2' but target 'moodle' has option auth 'manual' "
        "(at targets.yaml:3:5)"
    )
    assert "set the auth kind in one place" in warning.hint


def test_auth_of_other_targets_is_not_checked_against_moodle_plugins(
    rules: Path, catalog: Catalog
) -> None:
    write(rules, "canvas.yaml", "auth: {value: saml2}", target="canvas")
    # Canvas takes its login provider from a target option: the key goes nowhere there, but
    # saml2 is not measured against Moodle's auth plugins.
    error = only(check_all(rules, catalog))
    assert (str(error.mark), error.message) == ("canvas.yaml:5:9", "canvas has no user field auth")
    assert "authentication_provider_id" in error.hint


# --- emails are never folded -----------------------------------------------------------------------


def test_folding_an_email_is_an_error(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "mail.yaml",
        """
        username: {from: userName, transforms: [trim, ascii, lower]}
        email: {from: 'emails[type eq "work"].value', transforms: [trim, ascii, lower]}
        """,
    )
    error = only(check_all(rules, catalog))
    assert str(error.mark) == "mail.yaml:6:61", "at the transforms"
    assert error.severity == Severity.error
    assert error.message == (
        "mapping 'email' folds addresses to ASCII: józef@example.com would become another "
        "mailbox, jozef@example.com"
    )
    assert error.hint.startswith("remove `ascii` from its transforms")


# --- how warnings are shown and kept ---------------------------------------------------------------


def test_warnings_render_after_their_place_and_are_counted_apart(
    rules: Path, catalog: Catalog
) -> None:
    write(rules, "names.yaml", "username: {from: userName}\nauth: {value: saml2}")
    found = check_all(rules, catalog)
    rendered = render_errors(found)
    assert rendered.splitlines()[0] == (
        "names.yaml:5:13: Moodle usernames must be lowercase: mapping 'username' may produce "
        "capitals"
    )
    assert f"names.yaml:5:13: warning: {ASCII_WARNING}" in rendered
    assert "names.yaml:6:17: warning: mapping 'auth' is 'saml2'" in rendered
    assert rendered.endswith("\n1 problem(s), 2 warning(s) in 1 file(s)")
    assert [e["severity"] for e in errors_as_json(found)] == ["error", "warning", "warning"]
    assert render_errors(found[1:]).endswith("\n2 warning(s) in 1 file(s)")
    assert str(found[2]).startswith("names.yaml:6:17: warning: mapping 'auth'")


def test_the_rule_book_loads_rules_with_warnings_and_logs_them(
    rules: Path, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    write(rules, "names.yaml", "username: {from: userName, transforms: [lower]}")
    book = RuleBook(rules, lambda d: check_directory(d, catalog, with_warnings=True))
    with caplog.at_level(logging.WARNING, logger="bridge.rules"):
        ruleset = book.load()
    assert ruleset.file("names") is not None
    assert "1 warning(s)" in caplog.text and ASCII_WARNING in caplog.text
    write(rules, "names.yaml", "username: {from: userName}")
    with pytest.raises(RuleErrors) as refused:
        book.load()
    assert [e.message.split(":")[0] for e in refused.value.errors] == [
        "Moodle usernames must be lowercase"
    ]


# --- mapping keys: Moodle's user fields and the custom profile fields the target declares --------


def test_a_key_moodle_has_no_field_for_is_an_error_with_the_field_it_means(
    tmp_path: Path, catalog: Catalog
) -> None:
    targets(tmp_path, "custom_profile_fields: [title, roles]\n")
    write(
        tmp_path,
        "keys.yaml",
        """
        firstName: {from: name.givenName}
        titel: {from: title}
        roles: {from: title}
        lastname: {from: name.familyName}
        """,
    )
    found = check_all(tmp_path, catalog)
    assert [(str(e.mark), e.message, e.severity) for e in found] == [
        ("keys.yaml:5:14", "moodle has no user field firstName: did you mean firstname?", "error"),
        ("keys.yaml:6:10", "moodle has no user field titel: did you mean title?", "error"),
    ]
    assert "custom_profile_fields (roles, title)" in found[0].hint


def test_without_declared_profile_fields_a_custom_one_is_a_warning(
    rules: Path, catalog: Catalog
) -> None:
    write(rules, "keys.yaml", "firstName: {from: name.givenName}\ncostcentre: {from: title}")
    error, warning = check_all(rules, catalog)
    assert (str(error.mark), error.message) == (
        "keys.yaml:5:14",
        "moodle has no user field firstName: did you mean firstname?",
    )
    assert (str(warning.mark), warning.message, warning.severity) == (
        "keys.yaml:6:15",
        "mapping 'costcentre' goes to a custom profile field 'costcentre', which target "
        "'moodle' does not declare",
        Severity.warning,
    )
    assert "custom_profile_fields: [costcentre]" in warning.hint


def test_renamed_profile_fields_must_be_declared(tmp_path: Path, catalog: Catalog) -> None:
    targets(
        tmp_path,
        """
        custom_profile_fields: [jobtitle]
        profile_fields: {title: jobtitle, costcentre: cost_centre, legacy: ""}
        """,
    )
    write(
        tmp_path,
        "renamed.yaml",
        "title: {from: title}\ncostcentre: {from: title}\nlegacy: {from: title}",
    )
    error = only(check_all(tmp_path, catalog))
    assert (str(error.mark), error.message) == (
        "renamed.yaml:6:15",
        "mapping 'costcentre' goes to the custom profile field 'cost_centre' (option "
        "profile_fields), which target 'moodle' does not declare",
    )


@pytest.mark.parametrize(
    ("key", "why"),
    [("password", "never sends a password"), ("suspended", "leaves the scope")],
)
def test_keys_the_moodle_target_never_sends(
    rules: Path, catalog: Catalog, key: str, why: str
) -> None:
    write(rules, "never.yaml", f"{key}: {{from: externalId}}")
    error = only(check_all(rules, catalog))
    assert error.message == f"moodle has no user field {key} a mapping can set"
    assert why in error.hint


def test_custom_profile_fields_is_a_list_of_short_names(tmp_path: Path, catalog: Catalog) -> None:
    targets(tmp_path, "custom_profile_fields: title\n")
    error = only(check_all(tmp_path, catalog))
    assert (str(error.mark), error.message) == (
        "targets.yaml:7:30",
        "option 'custom_profile_fields' of target 'moodle' must be a list of profile field "
        "short names",
    )
    targets(tmp_path, "custom_profile_fields: [title, job-title]\n")
    error = only(check_all(tmp_path, catalog))
    assert (str(error.mark), error.message) == (
        "targets.yaml:7:30",
        "option 'custom_profile_fields' of target 'moodle' lists 'job-title', which cannot be "
        "a profile field short name",
    )
