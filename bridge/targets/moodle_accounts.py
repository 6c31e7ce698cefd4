"""Moodle accounts for the ``moodle`` target: find, create or update, suspend (LMS.md).

``Accounts`` looks an account up before it creates one (by the link's id, the username, then
the idnumber, which is not unique in Moodle), refuses before sending any value Moodle would
refuse (``bridge.targets.moodle_values``), explains a refusal as precisely as the site allows
(a production site says only "Invalid parameter value detected": who already holds the
username or email is looked up; otherwise it is the site's configuration), and reads the
account back after writing it: Moodle drops custom profile fields it does not define silently.
"""

from __future__ import annotations

from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.moodle_values import account_problems
from bridge.targets.moodle_values import username_problem
from bridge.targets.moodle_ws import AUTH_DEBUGINFO
from bridge.targets.moodle_ws import DATA_CODES
from bridge.targets.moodle_ws import DATA_DEBUGINFO
from bridge.targets.moodle_ws import LANG_DEBUGINFO
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.moodle_ws import Run
from bridge.targets.moodle_ws import changed_fields
from bridge.targets.moodle_ws import confirmed_account
from bridge.targets.moodle_ws import dropped_fields
from bridge.targets.moodle_ws import live_users
from bridge.targets.moodle_ws import pick_user
from bridge.targets.moodle_ws import text
from bridge.targets.moodle_ws import user_row

Call = Callable[[Run, str, Mapping[str, Any]], Awaitable[Any]]
"""``MoodleTarget.call``: one web-service call, journalled in the run."""


def username_owner(
    user: Mapping[str, Any], username: str, idnumbers: set[str]
) -> Mapping[str, Any]:
    """The account found by the person's username, unless it belongs to someone else: an
    account whose idnumber is not one of the person's (data quality, both named)."""
    if user.get("idnumber") and idnumbers and user["idnumber"] not in idnumbers:
        raise MoodleError(
            f"username {username!r} belongs to Moodle user {user['id']} whose "
            f"idnumber is {user['idnumber']!r}, not {sorted(idnumbers)[0]!r}",
            category=Category.data_quality,
        )
    return user


class Accounts:
    """The accounts of one Moodle target, reached through its ``call``."""

    def __init__(self, call: Call, options: Mapping[str, Any]) -> None:
        self._call = call
        self.options = options
        self._extended = bool(options.get("extended_username_chars"))

    async def _users(self, run: Run, field_: str, value: str) -> list[dict[str, Any]]:
        answer = await self._call(
            run, "core_user_get_users_by_field", {"field": field_, "values": [value]}
        )
        return live_users(answer)

    def keys(self, delivery: Delivery) -> tuple[set[str], list[str]]:
        """The idnumbers and the usernames (lowercased, only those Moodle would accept) the
        person's account may be found by, in the order ``find`` tries them."""
        attributes = delivery.data.get("attributes") or {}
        idnumbers = {
            text(v) for v in (attributes.get("idnumber"), delivery.account.get("idnumber")) if v
        }
        given = (attributes.get("username"), delivery.account.get("username"))
        usernames = list(dict.fromkeys(text(u).strip().lower() for u in given if u))
        # A username Moodle would refuse cannot be looked up either (the lookup itself fails
        # with invalidparameter): no account holds it, and the upsert names the problem.
        usernames = [u for u in usernames if username_problem(u, extended=self._extended) is None]
        return idnumbers, usernames

    async def find(self, run: Run, delivery: Delivery) -> Mapping[str, Any] | None:
        """The person's account: by the link's id, else by username, else by idnumber."""
        if delivery.lms_user_id:
            found = await self._users(run, "id", delivery.lms_user_id)
            if found:
                return found[0]
        idnumbers, usernames = self.keys(delivery)
        for username in usernames:
            found = await self._users(run, "username", username)
            if found:
                return username_owner(found[0], username, idnumbers)
        for idnumber in sorted(idnumbers):
            found = await self._users(run, "idnumber", idnumber)
            match = pick_user(found, usernames[0] if usernames else None, idnumber)
            if match is not None:
                return match
        return None

    async def user_id(self, run: Run, delivery: Delivery, *, required: bool) -> int | None:
        if run.user_id is None:
            user = await self.find(run, delivery)
            run.user_id = str(user["id"]) if user else None
        if run.user_id is None and required:
            raise MoodleError("no Moodle account for this person (its upsert has not succeeded)")
        return int(run.user_id) if run.user_id else None

    async def _update(self, run: Run, userid: int, row: Mapping[str, Any]) -> None:
        """core_user_update_users for one account: its warnings are this account's failures
        (an email Moodle refuses or another account holds; a username another account holds
        fails the UPDATE with dmlwriteexception)."""
        answer = await self._call(run, "core_user_update_users", {"users": [{"id": userid, **row}]})
        warnings = answer.get("warnings", []) if isinstance(answer, dict) else []
        for warning in warnings:
            if str(warning.get("itemid", userid)) != str(userid):
                continue
            raise await self.update_refusal(run, userid, row, warning)

    async def update_refusal(
        self, run: Run, userid: int, row: Mapping[str, Any], warning: Mapping[str, Any]
    ) -> MoodleError:
        """The error a core_user_update_users warning about this account means, named as
        precisely as Moodle allows (who already holds the username or email)."""
        code = str(warning.get("warningcode", ""))
        moodle = f"core_user_update_users: {code}: {warning.get('message')}"
        if code == "useremailinvalid":
            return MoodleError(
                f"email {row.get('email')!r} is not an address Moodle accepts ({moodle})",
                category=Category.data_quality,
                errorcode=code,
            )
        if code in ("useremailduplicate", "dmlwriteexception"):
            username, email = row.get("username"), row.get("email")
            holder = await self._holder(run, username, email, besides=userid)
            if holder is not None:
                return MoodleError(holder, category=Category.data_quality, errorcode=code)
        category = Category.data_quality if code in DATA_CODES else Category.configuration
        return MoodleError(moodle, category=category, errorcode=code)

    async def _holder(
        self, run: Run, username: object, email: object, *, besides: int | None = None
    ) -> str | None:
        """Which other Moodle account already holds this username or email, said as a
        data-quality message (None: neither is taken). Emails are compared as Moodle's
        duplicate check does, case-insensitively (core_user_get_users: a LIKE search), where
        core_user_get_users_by_field would compare them exactly (observed on Moodle 4.3)."""
        if username:
            for user in await self._users(run, "username", str(username)):
                if int(user["id"]) != besides:
                    return f"username {username} is already used by Moodle user {user['id']}"
        if email:
            answer = await self._call(
                run, "core_user_get_users", {"criteria": [{"key": "email", "value": str(email)}]}
            )
            for user in answer.get("users", []) if isinstance(answer, dict) else []:
                same = str(user.get("email", "")).casefold() == str(email).casefold()
                if same and int(user["id"]) != besides:
                    return (
                        f"email {email} is already used by Moodle user {user['id']} "
                        f"({user.get('username')}): two people cannot share an address unless "
                        "the site allows accounts with the same email"
                    )
        return None

    def check(self, row: Mapping[str, Any], *, create: bool) -> None:
        """Refuse before sending what Moodle would refuse (data_quality, field and value)."""
        problems = account_problems(row, extended=self._extended, create=create)
        if problems:
            raise MoodleError("; ".join(problems), category=Category.data_quality)

    async def _create(
        self, run: Run, delivery: Delivery, row: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """Create the account (run.user_id set, None returned), or return the account that
        turned out to exist meanwhile; a refusal is explained as precisely as Moodle allows."""
        try:
            answer = await self._call(run, "core_user_create_users", {"users": [row]})
        except MoodleError as error:
            return await self.create_refusal(run, delivery, row, error)
        if not isinstance(answer, list) or len(answer) != 1 or "id" not in answer[0]:
            raise MoodleError(f"core_user_create_users: unexpected answer {answer!r:.80}")
        run.user_id = str(answer[0]["id"])
        return None

    async def create_refusal(
        self, run: Run, delivery: Delivery, row: Mapping[str, Any], error: MoodleError
    ) -> Mapping[str, Any]:
        """What core_user_create_users refusing this one row means: the account that turned
        out to exist meanwhile (returned), or the refusal explained as precisely as Moodle
        allows (raised)."""
        if error.errorcode not in ("invalidparameter", "dmlwriteexception"):
            raise error
        auth = str(row.get("auth"))
        if any(m in error.debuginfo for m in AUTH_DEBUGINFO):
            raise MoodleError(
                f"Moodle has no auth plugin {auth!r} for new accounts ({error.message}): "
                "install and enable it on the site, or set options.auth / the `auth` "
                "mapping to one it has (stock Moodle: manual, email, oauth2, ldap, cas, "
                "shibboleth, lti, nologin…)",
                category=Category.configuration,
                errorcode=error.errorcode,
            ) from error
        # Perhaps made meanwhile ("Username already exists" on debugging sites only).
        user = await self.find(run, delivery)
        if user is not None:
            return user
        holder = await self._holder(run, None, row.get("email"))  # find() tried the username
        if holder is not None:
            raise MoodleError(
                holder, category=Category.data_quality, errorcode=error.errorcode
            ) from error
        if any(m in error.debuginfo for m in DATA_DEBUGINFO):
            raise error
        if any(m in error.debuginfo for m in LANG_DEBUGINFO):
            raise MoodleError(
                f"Moodle has no language pack {row.get('lang')!r} ({error.message}): install "
                "it on the site (Site administration → Language → Language packs), or map "
                "`lang` to one it has",
                category=Category.configuration,
                errorcode=error.errorcode,
            ) from error
        raise MoodleError(
            "Moodle refused the account although every value passes its checks: check "
            f"that the auth plugin {auth!r} is installed on the site (options.auth / the "
            f"`auth` mapping) and the site's language ({error.message})",
            category=Category.configuration,
            errorcode=error.errorcode,
        ) from error

    async def _read_back(self, run: Run, row: Mapping[str, Any]) -> None:
        """Read the account written; a custom profile field sent with a value and absent now
        was dropped by Moodle (the site defines no such field): configuration, named."""
        found = await self._users(run, "id", str(run.user_id))
        self.confirm(run, row, found[0] if found else None)

    def confirm(self, run: Run, row: Mapping[str, Any], user: Mapping[str, Any] | None) -> None:
        """What the read-back ``user`` of the account written with ``row`` shows: the account
        as Moodle holds it (``run.confirmed``), or an error naming what Moodle lost."""
        if user is None:
            raise MoodleError(f"Moodle user {run.user_id} is gone right after it was written")
        run.confirmed = confirmed_account(user)
        dropped = dropped_fields(row, user)
        if dropped:
            renames = {v: k for k, v in (self.options.get("profile_fields") or {}).items()}
            raise MoodleError(
                "; ".join(
                    f"Moodle dropped profile field {name!r}: the site defines no such field — "
                    "create it under Site administration → Users → Accounts → User profile fields with "
                    f"short name {name!r}, or remove `{renames.get(name, name)}` from the mapping"
                    for name in dropped
                ),
                category=Category.configuration,
            )

    def new_row(self, delivery: Delivery) -> dict[str, Any]:
        """The checked core_user_create_users row for a person without an account."""
        attributes = dict(delivery.data.get("attributes") or {})
        merged = {k: v for k, v in {**delivery.account, **attributes}.items() if v is not None}
        row = user_row(merged, self.options, create=True)
        self.check(row, create=True)
        return row

    def changes(self, run: Run, delivery: Delivery, user: Mapping[str, Any]) -> dict[str, Any]:
        """The checked core_user_update_users fields (no ``id``) that bring the found account
        ``user`` to the person's attributes; empty when it is up to date."""
        run.user_id = str(user["id"])
        run.confirmed = confirmed_account(user)
        attributes = dict(delivery.data.get("attributes") or {})
        changes = changed_fields(user_row(attributes, self.options, create=False), user)
        if changes:
            self.check(changes, create=False)
        return changes

    async def upsert(self, run: Run, delivery: Delivery) -> str:
        user = await self.find(run, delivery)
        if user is None:
            row = self.new_row(delivery)
            user = await self._create(run, delivery, row)
            if user is None:
                await self._read_back(run, row)
                return "created"
        return await self.update_found(run, delivery, user)

    async def update_found(self, run: Run, delivery: Delivery, user: Mapping[str, Any]) -> str:
        """The rest of an upsert once the account is found: update what differs, read back."""
        changes = self.changes(run, delivery, user)
        if not changes:
            return "up to date"
        await self._update(run, int(user["id"]), changes)
        await self._read_back(run, changes)
        return "updated"

    async def set_suspended(self, run: Run, delivery: Delivery) -> str:
        suspend = delivery.kind == "suspend_account"
        user = await self.find(run, delivery)
        if user is None:
            if suspend:
                return "no account to suspend"
            raise MoodleError("no Moodle account to reactivate")
        run.user_id = str(user["id"])
        if bool(user.get("suspended")) == suspend:
            return "already suspended" if suspend else "already active"
        await self._update(run, int(user["id"]), {"suspended": 1 if suspend else 0})
        return "suspended" if suspend else "reactivated"
