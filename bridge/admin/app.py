"""The admin page at ``/admin``: a Starlette sub-application, server-rendered with Jinja2
templates, no script. Log in with a token holding the ``admin`` scope; a signed session
cookie (HttpOnly, SameSite=Strict, Secure over https) then carries the session, and every
action is a POST form carrying the session's CSRF token (403 without it).

The session of a stored token ends with the token: each request re-reads whether it is
revoked (one unique-index read), as the SCIM server does for bearer tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from collections.abc import Callable
from datetime import UTC
from datetime import date
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import quote
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Mount
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bridge.admin import session as sessions
from bridge.admin.actions import ActionRefused
from bridge.admin.actions import Actions
from bridge.admin.session import Session
from bridge.admin.views import Views
from bridge.admin.views import changes
from bridge.admin.views import kind_of
from bridge.auth.tokens import ADMIN
from bridge.auth.tokens import Principal
from bridge.auth.tokens import digest
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.planning import Planner
from bridge.rules.model import RuleSet
from bridge.store import admin_views
from bridge.store import tokens
from bridge.store.admin_views import JournalFilter

log = logging.getLogger("bridge.admin")

HERE = Path(__file__).resolve().parent
PREFIX = "/admin"
CATEGORIES = ("data_quality", "configuration", "transient")
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Authenticate = Callable[[str], Principal | None]
Page = Callable[[Request, Session], Awaitable[Response]]


class AdminPage:
    """The pages and actions, around the views, the actions and the session keys."""

    def __init__(
        self,
        provisioner: Provisioner,
        rules: Callable[[], RuleSet | None],
        settings: Settings,
        authenticate: Authenticate,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = provisioner.db
        self.settings = settings
        self.authenticate = authenticate
        self.clock = clock or provisioner.clock
        planner = Planner(provisioner.db, provisioner.store, provisioner.catalog, rules, self.clock)
        self.views = Views(provisioner.db, planner, self.clock)
        self.actions = Actions(provisioner.db, planner, self.clock)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["kind_of"] = kind_of
        self.templates.env.globals["changes"] = changes
        self.templates.env.globals["prefix"] = PREFIX
        self.templates.env.filters["when"] = _when
        self._key: bytes | None = None

    # -- sessions --------------------------------------------------------------------------

    def key(self) -> bytes:
        """The session key, derived from the database's server secret (every replica's)."""
        if self._key is None:
            with self.db.read() as conn:
                self._key = sessions.session_key(admin_views.session_secret(conn))
        return self._key

    async def session(self, request: Request) -> Session | None:
        key = await run_in_threadpool(self.key)
        found = sessions.read_session(request.cookies.get(sessions.COOKIE), key, self.clock())
        if found is None or not found.stored:
            return found
        return found if await run_in_threadpool(self._still_active, found) else None

    def _still_active(self, found: Session) -> bool:
        with self.db.read() as conn:
            return tokens.is_active(conn, found.token_digest)

    def secure(self, request: Request) -> bool:
        return request.url.scheme == "https" or (self.settings.base_url or "").startswith("https:")

    def _cookie(
        self, response: Response, request: Request, name: str, value: str, age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=age,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=self.secure(request),
        )

    # -- plumbing --------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        found: Session | None = None,
        status: int = 200,
    ) -> Response:
        base = {
            "session": found,
            "csrf": found.csrf(self.key()) if found is not None else "",
            **self._flash(request),
        }
        response = self.templates.TemplateResponse(
            request, template, {**base, **context}, status_code=status
        )
        response.headers.update(HEADERS)
        return response

    def _flash(self, request: Request) -> dict[str, str | None]:
        """The message a redirect after an action carries, if this page signed it."""
        params = request.query_params
        shown: dict[str, str | None] = {"notice": None, "problem": None}
        for kind in shown:
            text = params.get(kind)
            if text and sessions.same(
                sessions.flash_mac(self.key(), kind, text), params.get("sig")
            ):
                shown[kind] = text
        return shown

    def flashed(self, back: str, kind: str, text: str) -> RedirectResponse:
        """303 to ``back`` showing ``text`` as a notice or a problem."""
        sig = sessions.flash_mac(self.key(), kind, text)
        return RedirectResponse(f"{back}?{urlencode({kind: text, 'sig': sig})}", status_code=303)

    def page(self, handler: Page) -> Callable[[Request], Awaitable[Response]]:
        """A page behind the login: no session → 303 to the login form, back here after."""

        async def serve(request: Request) -> Response:
            found = await self.session(request)
            if found is None:
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{PREFIX}/login?next={quote(here)}", status_code=303)
            return await handler(request, found)

        return serve

    def action(
        self, handler: Callable[[Request, Session, Any], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST behind the login and the session's CSRF token (403 without it)."""

        async def serve(request: Request) -> Response:
            found = await self.session(request)
            if found is None:
                return RedirectResponse(f"{PREFIX}/login", status_code=303)
            form = await _form(request)
            if not sessions.same(found.csrf(self.key()), _text(form.get("csrf"))):
                log.warning("admin %s: a form without its CSRF token refused", found.name)
                return self.render(
                    request,
                    "error.html",
                    {
                        "title": "Refused",
                        "message": "The form's CSRF token is missing or wrong: reload the page and try again.",
                    },
                    found=found,
                    status=403,
                )
            return await handler(request, found, form)

        return serve

    # -- login -----------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if await self.session(request) is not None:
            return RedirectResponse(f"{PREFIX}/", status_code=303)
        return self._login(request, None, 200, request.query_params.get("next"))

    def _login(
        self, request: Request, problem: str | None, status: int, then: str | None
    ) -> Response:
        nonce = sessions.login_nonce()
        response = self.render(
            request,
            "login.html",
            {
                "login_csrf": sessions.login_csrf(self.key(), nonce),
                "next": _next(then),
                "login_problem": problem,
            },
            status=status,
        )
        self._cookie(response, request, sessions.LOGIN_COOKIE, nonce, 1800)
        return response

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        key = await run_in_threadpool(self.key)
        then = _text(form.get("next"))
        nonce = request.cookies.get(sessions.LOGIN_COOKIE)
        if nonce is None or not sessions.same(
            sessions.login_csrf(key, nonce), _text(form.get("csrf"))
        ):
            return self._login(request, "The login form expired: paste the token again.", 403, then)
        token = (_text(form.get("token")) or "").strip()
        principal = await run_in_threadpool(self.authenticate, token) if token else None
        if principal is None:
            log.warning("admin login refused: the token is not valid")
            return self._login(request, "That token is not valid (unknown or revoked).", 401, then)
        if not principal.can(ADMIN):
            log.warning("admin login refused: the token %r lacks the admin scope", principal.name)
            return self._login(
                request,
                f"The token '{principal.name}' lacks the admin scope: create one with "
                "`bridge tokens create NAME --scope admin`.",
                403,
                then,
            )
        token_digest = digest(token)
        stored = await run_in_threadpool(self._stored, token_digest)
        found = Session.start(principal.name, token_digest, stored=stored, now=self.clock())
        log.info("admin %s logged in", principal.name)
        response = RedirectResponse(_next(then), status_code=303)
        self._cookie(
            response,
            request,
            sessions.COOKIE,
            found.cookie(key),
            int(sessions.LIFETIME.total_seconds()),
        )
        response.delete_cookie(sessions.LOGIN_COOKIE, path=PREFIX)
        return response

    def _stored(self, token_digest: str) -> bool:
        with self.db.read() as conn:
            return tokens.is_active(conn, token_digest)

    async def logout(self, request: Request, found: Session, form: Any) -> Response:
        log.info("admin %s logged out", found.name)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(sessions.COOKIE, path=PREFIX)
        return response

    # -- pages -----------------------------------------------------------------------------

    async def home(self, request: Request, found: Session) -> Response:
        data = await run_in_threadpool(self.views.overview)
        return self.render(request, "home.html", data, found=found)

    async def journal(self, request: Request, found: Session) -> Response:
        params = request.query_params
        person_text = (params.get("person") or "").strip()
        problems: list[str] = []
        person_id: str | None = None
        if person_text:
            people = await run_in_threadpool(self.views.find, person_text)
            if len(people) == 1:
                person_id = people[0].id
            else:
                problems.append(
                    f"no person is {person_text!r}"
                    if not people
                    else f"{len(people)} people match {person_text!r}: be more precise"
                )
        since = _moment(params.get("since"), problems)
        before = _integer(params.get("before"), problems)
        where = JournalFilter(
            person=person_id,
            actor=(params.get("actor") or "").strip() or None,
            op=(params.get("op") or "").strip() or None,
            since=since,
            before=before,
        )
        entries = [] if problems else await run_in_threadpool(self.views.journal, where)
        names = await run_in_threadpool(
            self.views.labels, {e.resource_id for e in entries if e.resource_id}
        )
        older = None
        if len(entries) == 100 and entries[-1].seq is not None:
            query = {k: v for k, v in params.items() if k != "before"}
            older = f"?{urlencode({**query, 'before': entries[-1].seq})}"
        return self.render(
            request,
            "journal.html",
            {
                "entries": entries,
                "names": names,
                "filters": {k: params.get(k, "") for k in ("person", "actor", "op", "since")},
                "problems": problems,
                "older": older,
            },
            found=found,
        )

    async def people(self, request: Request, found: Session) -> Response:
        text = (request.query_params.get("q") or "").strip()
        people = await run_in_threadpool(self.views.find, text) if text else []
        if len(people) == 1:
            return RedirectResponse(f"{PREFIX}/people/{quote(people[0].id)}", status_code=303)
        return self.render(request, "people.html", {"q": text, "people": people}, found=found)

    async def person(self, request: Request, found: Session) -> Response:
        person_id = request.path_params["person_id"]
        timeline = await run_in_threadpool(self.views.timeline, person_id)
        if timeline is None:
            raise HTTPException(404, f"no person {person_id!r}")
        return self.render(request, "person.html", {"t": timeline}, found=found)

    async def dead_letters(self, request: Request, found: Session) -> Response:
        category = request.query_params.get("category") or None
        if category not in (None, *CATEGORIES):
            category = None
        target = request.query_params.get("target") or None
        data = await run_in_threadpool(self.views.dead_letters, category, target)
        data.update({"category": category or "", "target": target or "", "categories": CATEGORIES})
        return self.render(request, "dead_letters.html", data, found=found)

    async def settle_dead(self, request: Request, found: Session, form: Any) -> Response:
        row_id = int(request.path_params["row_id"])
        if request.path_params["verb"] not in ("retry", "skip"):
            raise HTTPException(404, "retry or skip a dead letter")
        act = self.actions.retry if request.path_params["verb"] == "retry" else self.actions.skip
        return await self._act(
            lambda: act(row_id, actor=found.name), f"{PREFIX}/dead-letters", found
        )

    async def retry_all(self, request: Request, found: Session, form: Any) -> Response:
        category = _text(form.get("category")) or None
        target = _text(form.get("target")) or None
        back = f"{PREFIX}/dead-letters"
        if category not in (None, *CATEGORIES):
            return self.flashed(back, "problem", f"no category {category!r}")
        return await self._act(
            lambda: self.actions.retry_all(category=category, target=target, actor=found.name),
            back,
            found,
        )

    async def runs(self, request: Request, found: Session) -> Response:
        data = await run_in_threadpool(self.views.runs)
        return self.render(request, "runs.html", data, found=found)

    async def run(self, request: Request, found: Session) -> Response:
        data = await run_in_threadpool(self.views.run, request.path_params["run_id"])
        if data["run"] is None and data["error"].startswith("no run"):
            raise HTTPException(404, data["error"])
        return self.render(request, "run.html", data, found=found)

    async def decide(self, request: Request, found: Session, form: Any) -> Response:
        run_id = request.path_params["run_id"]
        if request.path_params["verb"] not in ("approve", "reject"):
            raise HTTPException(404, "approve or reject a run")
        if request.path_params["verb"] == "approve":

            def act() -> str:
                return self.actions.approve(run_id, actor=found.name)
        else:
            reason = (_text(form.get("reason")) or "").strip() or None

            def act() -> str:
                return self.actions.reject(run_id, actor=found.name, reason=reason)

        return await self._act(act, f"{PREFIX}/runs/{quote(run_id)}", found)

    async def _act(self, act: Callable[[], str], back: str, found: Session) -> Response:
        try:
            said = await run_in_threadpool(act)
        except ActionRefused as exc:
            return self.flashed(back, "problem", str(exc))
        log.info("admin %s: %s", found.name, said)
        return self.flashed(back, "notice", said)

    async def training(self, request: Request, found: Session) -> Response:
        problems: list[str] = []
        as_of = self.clock().date()
        text = request.query_params.get("as_of")
        if text:
            try:
                as_of = date.fromisoformat(text)
            except ValueError:
                problems.append(f"as of {text!r}: not a date (YYYY-MM-DD)")
        data = await run_in_threadpool(self.views.training, as_of)
        data["problems"] = problems
        return self.render(request, "training.html", data, found=found)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        found = await self.session(request)
        detail = exc.detail if isinstance(exc, HTTPException) else "not found"
        return self.render(
            request,
            "error.html",
            {"title": "Not found", "message": detail},
            found=found,
            status=404,
        )

    def app(self) -> Starlette:
        post = ["POST"]
        return Starlette(
            routes=[
                Route("/", self.page(self.home)),
                Route("/login", self.login_form),
                Route("/login", self.login, methods=post),
                Route("/logout", self.action(self.logout), methods=post),
                Route("/journal", self.page(self.journal)),
                Route("/people", self.page(self.people)),
                Route("/people/{person_id}", self.page(self.person)),
                Route("/dead-letters", self.page(self.dead_letters)),
                Route("/dead-letters/retry", self.action(self.retry_all), methods=post),
                Route(
                    "/dead-letters/{row_id:int}/{verb:str}",
                    self.action(self.settle_dead),
                    methods=post,
                ),
                Route("/runs", self.page(self.runs)),
                Route("/runs/{run_id}", self.page(self.run)),
                Route("/runs/{run_id}/{verb}", self.action(self.decide), methods=post),
                Route("/training", self.page(self.training)),
                Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
            ],
            exception_handlers={404: self.not_found},
        )


def admin_routes(
    provisioner: Provisioner,
    rules: Callable[[], RuleSet | None],
    settings: Settings,
    authenticate: Authenticate,
    *,
    clock: Callable[[], datetime] | None = None,
) -> list[BaseRoute]:
    """The admin page's routes for the bridge's app: ``/admin`` (redirected to ``/admin/``)
    and the sub-application under it. ``rules``: the current rule set (``RuleBook.current``);
    ``authenticate``: the SCIM server's bearer-token check."""
    page = AdminPage(provisioner, rules, settings, authenticate, clock)

    async def slash(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    return [Route(PREFIX, slash, methods=["GET", "HEAD"]), Mount(PREFIX, app=page.app())]


# -- small parsers ---------------------------------------------------------------------------


MAX_FORM_BYTES = 65_536


async def _form(request: Request) -> dict[str, str]:
    """A posted form (``application/x-www-form-urlencoded``, what every form here sends),
    read with the standard library: python-multipart, which Starlette's ``request.form()``
    needs, is not a dependency. Another body, or one over 64 KiB, is an empty form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _next(value: str | None) -> str:
    """Where to go after logging in: a path of this page only (never another site)."""
    if (
        value
        and value.startswith(f"{PREFIX}/")
        and not value.startswith("//")
        and "\\" not in value
    ):
        return value
    return f"{PREFIX}/"


def _moment(text: str | None, problems: list[str]) -> datetime | None:
    if not text or not text.strip():
        return None
    try:
        found = datetime.fromisoformat(text.strip())
    except ValueError:
        problems.append(f"since {text!r}: not a date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM)")
        return None
    if found.tzinfo is None:
        found = found.replace(tzinfo=UTC)  # the page shows and reads times in UTC
    return found


def _integer(text: str | None, problems: list[str]) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        problems.append(f"before {text!r}: not a journal sequence number")
        return None
    return int(text)


def _when(value: datetime | date | str | None) -> str:
    """A time as the page shows it: UTC, to the second."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value.isoformat()
