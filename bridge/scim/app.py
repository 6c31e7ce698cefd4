"""The SCIM 2.0 server (RFC 7644) at ``/scim/v2``, as a Starlette application."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from typing import TypeVar

from scim2_models import ForbiddenException
from scim2_models import InvalidSyntaxException
from scim2_models import NotFoundException
from scim2_models import NotImplementedException
from scim2_models import PayloadTooLargeException
from scim2_models import SCIMException
from scim2_models import TooManyException
from scim2_models import UnauthorizedException
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Route
from starlette.routing import request_response
from starlette.types import Receive
from starlette.types import Scope
from starlette.types import Send

from bridge.auth.tokens import READ
from bridge.auth.tokens import WRITE
from bridge.auth.tokens import Principal
from bridge.config import Settings
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.provision.resources import Outcome
from bridge.rules.book import RuleBook
from bridge.schemas import Catalog
from bridge.scim import discovery
from bridge.scim import door
from bridge.scim import openapi
from bridge.scim.bulk import run_bulk
from bridge.scim.errors import ScimResponse
from bridge.scim.errors import error_response
from bridge.scim.errors import from_exception
from bridge.scim.hris import HrisIntake
from bridge.scim.metrics import MetricsEndpoint
from bridge.scim.metrics import RequestMetrics
from bridge.scim.metrics import state_reader
from bridge.scim.params import ListQuery
from bridge.scim.params import split_list
from bridge.scim.quirks import normalize_patch
from bridge.scim.quirks import normalize_resource
from bridge.scim.ready import Readiness
from bridge.scim.render import Projector
from bridge.scim.render import Selection
from bridge.scim.render import resource_json
from bridge.store.engine import DatabaseBusy
from bridge.store.engine import QueryBudget
from bridge.store.engine import QueryBudgetExceeded
from bridge.store.engine import QueryCancelled
from bridge.telemetry import LogContext
from bridge.telemetry import Telemetry
from bridge.telemetry import current_request

log = logging.getLogger("bridge.scim")

Authenticate = Callable[[str], Principal | None]
Handler = Callable[["Call"], Awaitable[Response]]
ENDPOINTS = {"users": "User", "groups": "Group"}
CLIENT_CLOSED_REQUEST = 499
"""The status logged for a request whose client went away (nginx's; never sent to anyone)."""
T = TypeVar("T")


class _BodyTimeout(Exception):
    """The request body did not arrive within ``body_timeout_seconds``: 408, connection closed."""


@dataclass
class Call:
    """One authenticated request."""

    request: Request
    principal: Principal
    request_id: str
    base_url: str

    @property
    def cause(self) -> Cause:
        return Cause(self.principal.name, self.request_id)

    def wrote(self, outcome: Outcome) -> Outcome:
        """Note the journal seq of this request's write: every later log line of the
        request carries it (``bridge.telemetry.LogContext``)."""
        context = current_request.get()
        if context is not None and outcome.seq is not None:
            context.journal_seq = outcome.seq
        return outcome


class ScimServer:
    """Handlers of the SCIM endpoints, around one Provisioner."""

    def __init__(
        self,
        provisioner: Provisioner,
        catalog: Catalog,
        settings: Settings,
        authenticate: Authenticate,
    ) -> None:
        self.provisioner = provisioner
        self.catalog = catalog
        self.settings = settings
        self.authenticate = authenticate
        self.projectors = {rt: Projector(catalog, rt) for rt in ("User", "Group")}
        self.door_limits: dict[str, Any] = {
            "max_string_length": settings.max_string_length,
            "username_policy": settings.username_policy,
        }
        self.known_schemas = {
            rt: {str(self.catalog.model(rt).__schema__).lower()}
            | {urn.lower() for urn in catalog.extension_urns(rt)}
            for rt in ("User", "Group")
        }

    # -- plumbing --------------------------------------------------------------------------

    def endpoint(
        self, handlers: dict[str, tuple[str, Handler]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """One route: per method, the scope it needs and its handler; 405 for other methods."""

        async def serve(request: Request) -> Response:
            started = time.perf_counter()
            request_id = door.request_id(request.headers.get("x-request-id"))
            context = LogContext(request_id)
            bound = current_request.set(context)
            try:
                return await self._answer(request, handlers, request_id, started)
            finally:
                current_request.reset(bound)

        return serve

    async def _answer(
        self,
        request: Request,
        handlers: dict[str, tuple[str, Handler]],
        request_id: str,
        started: float,
    ) -> Response:
        """Serve one request; every failure rendered as a SCIM error; one log line."""
        try:
            response = await self._serve(request, handlers, request_id)
        except SCIMException as exc:
            response = from_exception(exc)
        except DatabaseBusy as exc:
            log.warning("database busy: %s", exc)
            response = error_response(
                503, "the database is busy; retry", headers={"Retry-After": "1"}
            )
        except QueryBudgetExceeded as exc:
            response = error_response(503, f"{exc}; retry later", headers=_retry_after(exc.seconds))
        except _BodyTimeout as exc:
            # Connection: close, or the rest of a body announced by Content-Length would
            # be read as the next request on this connection.
            response = error_response(408, str(exc), headers={"Connection": "close"})
        except ClientDisconnect:
            log.info(
                "the client went away while sending the request body",
                extra={"request_id": request_id},
            )
            response = Response(status_code=CLIENT_CLOSED_REQUEST)
        except QueryCancelled:  # _read logged why
            response = Response(status_code=CLIENT_CLOSED_REQUEST)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            response = error_response(500, "internal error; see the server log")
        response.headers["X-Request-Id"] = request_id
        log.info(
            "%s %s %s",
            request.method,
            request.url.path,
            response.status_code,
            extra={
                "request_id": request_id,
                "status": response.status_code,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        return response

    async def _serve(
        self, request: Request, handlers: dict[str, tuple[str, Handler]], request_id: str
    ) -> Response:
        principal = await self._principal(request)
        found = handlers.get(request.method)
        if found is None:
            allowed = ", ".join(sorted(handlers))
            return error_response(
                405,
                f"{request.method} is not allowed here; use {allowed}",
                headers={"Allow": allowed},
            )
        scope, handler = found
        if not principal.can(scope):
            raise ForbiddenException(detail=f"the token '{principal.name}' lacks the {scope} scope")
        base = self.settings.base_url or f"{request.url.scheme}://{request.url.netloc}/scim/v2"
        return await handler(Call(request, principal, request_id, base.rstrip("/")))

    async def _principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise UnauthorizedException(detail="a bearer token is required")
        cached = getattr(self.authenticate, "cached", None)
        known: bool = False
        principal: Principal | None = None
        if cached is not None:
            known, principal = cached(credential.strip())
        if not known:
            principal = await run_in_threadpool(self.authenticate, credential.strip())
        if principal is None:
            raise UnauthorizedException(detail="the bearer token is not valid")
        return principal

    async def body(self, call: Call) -> Any:
        length = call.request.headers.get("content-length")
        limit = self.settings.max_payload_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLargeException(detail=f"the body is over {limit} bytes")
        seconds = self.settings.body_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                raw = await call.request.body()
        except TimeoutError as exc:
            raise _BodyTimeout(f"the request body did not arrive within {seconds:g} s") from exc
        if len(raw) > limit:
            raise PayloadTooLargeException(detail=f"the body is over {limit} bytes")
        return door.parse_body(raw)

    def selection(self, resource_type: str, params: Any) -> Selection:
        return self.projectors[resource_type].selection(
            split_list(params.get("attributes")), split_list(params.get("excludedAttributes"))
        )

    def _one(self, call: Call, record: Any, selection: Selection, status: int = 200) -> Response:
        body = self.projectors[record.type].project(resource_json(record, call.base_url), selection)
        headers = {"ETag": record.etag}
        if status == 201:
            headers["Location"] = (
                body.get("meta", {}).get("location")
                or resource_json(record, call.base_url)["meta"]["location"]
            )
        return ScimResponse(body, status_code=status, headers=headers)

    # -- resources -------------------------------------------------------------------------

    def resource_type(self, call: Call) -> str:
        return ENDPOINTS[call.request.path_params["endpoint"].lower()]

    async def get(self, call: Call) -> Response:
        resource_type = self.resource_type(call)
        selection = self.selection(resource_type, call.request.query_params)
        members = "members" if resource_type == "Group" else "groups"
        with_members = selection.wants(members)
        inline = self.provisioner.is_point_read(
            [resource_type], by_id=True, with_members=with_members
        )
        resource_id = door.check_id(call.request.path_params["id"])
        record = await self._read(
            call,
            lambda budget: self.provisioner.get(
                resource_type,
                resource_id,
                with_members=with_members,
                inline=inline,
                budget=budget,
            ),
            inline=inline,
        )
        if_none_match = call.request.headers.get("if-none-match")
        if if_none_match and record.etag in {t.strip() for t in if_none_match.split(",")}:
            return Response(status_code=304, headers={"ETag": record.etag})
        return self._one(call, record, selection)

    async def list_resources(self, call: Call) -> Response:
        return await self._search(call, [self.resource_type(call)], dict(call.request.query_params))

    async def search(self, call: Call) -> Response:
        body = await self.body(call)
        if not isinstance(body, dict):
            raise InvalidSyntaxException(detail="a SearchRequest must be a JSON object")
        endpoint = call.request.path_params.get("endpoint")
        types = [ENDPOINTS[endpoint.lower()]] if endpoint else ["User", "Group"]
        return await self._search(call, types, body)

    async def _search(self, call: Call, types: list[str], params: dict[str, Any]) -> Response:
        query = ListQuery.parse(
            params,
            default_count=self.settings.max_page_size,
            max_count=self.settings.max_page_size,
            max_filter_terms=self.settings.max_filter_terms,
            max_filter_length=self.settings.max_filter_length,
        )
        selections = {
            rt: self.projectors[rt].selection(query.attributes, query.excluded) for rt in types
        }
        with_members = any(
            selections[rt].wants("members" if rt == "Group" else "groups") for rt in types
        )
        paging: dict[str, Any] = {
            "sort_by": query.sort_by,
            "descending": query.descending,
            "start_index": query.start_index,
            "cursor": query.cursor,
        }
        inline = self.provisioner.is_point_read(
            types, query.filter, with_members=with_members, **paging
        )
        try:
            page = await self._read(
                call,
                lambda budget: self.provisioner.search(
                    types,
                    query.filter,
                    with_members=with_members,
                    inline=inline,
                    budget=budget,
                    count=query.count,
                    use_cursor=query.use_cursor,
                    **paging,
                ),
                inline=inline,
            )
        except QueryBudgetExceeded as exc:
            if query.filter is None:
                raise  # nothing to narrow: 503, retry later
            raise TooManyException(detail=f"{exc}; narrow the filter") from exc
        resources = [
            self.projectors[r.type].project(resource_json(r, call.base_url), selections[r.type])
            for r in page.records
        ]
        body: dict[str, Any] = {
            "schemas": [discovery.LIST_SCHEMA],
            "totalResults": page.total,
            "itemsPerPage": len(resources),
        }
        if not query.use_cursor:
            body["startIndex"] = query.start_index
        if page.next_cursor:
            body["nextCursor"] = page.next_cursor
        body["Resources"] = resources
        return ScimResponse(body)

    async def create(self, call: Call) -> Response:
        resource_type = self.resource_type(call)
        # Every part of the request is checked before the write: a bad ?attributes= after
        # it would answer 400 over a stored row.
        selection = self.selection(resource_type, call.request.query_params)
        payload, tolerances = normalize_resource(
            await self.body(call),
            self.catalog.model(resource_type),
            self.known_schemas[resource_type],
            **self.door_limits,
        )
        outcome = call.wrote(
            await self.provisioner.create_async(call.cause, resource_type, payload, tolerances)
        )
        if outcome.members:
            outcome.record.members = outcome.members
        return self._one(call, outcome.record, selection, status=201)

    async def replace(self, call: Call) -> Response:
        resource_type = self.resource_type(call)
        selection = self.selection(resource_type, call.request.query_params)
        payload, tolerances = normalize_resource(
            await self.body(call),
            self.catalog.model(resource_type),
            self.known_schemas[resource_type],
            **self.door_limits,
        )
        resource_id = door.check_id(call.request.path_params["id"])
        call.wrote(
            await run_in_threadpool(
                lambda: self.provisioner.replace(
                    call.cause,
                    resource_type,
                    resource_id,
                    payload,
                    if_match=call.request.headers.get("if-match"),
                    tolerances=tolerances,
                )
            )
        )
        return await self._reread(call, resource_type, resource_id, selection)

    async def _reread(
        self, call: Call, resource_type: str, resource_id: str, selection: Selection
    ) -> Response:
        members = "members" if resource_type == "Group" else "groups"
        try:
            record = await self._read(
                call,
                lambda budget: self.provisioner.get(
                    resource_type,
                    resource_id,
                    with_members=selection.wants(members),
                    budget=budget,
                ),
            )
        except QueryBudgetExceeded as exc:
            detail = (
                f"the change is saved, but reading it back ran over its {exc.seconds:g} s budget"
            )
            return error_response(503, f"{detail}; GET it later", headers=_retry_after(exc.seconds))
        return self._one(call, record, selection)

    async def _read(
        self, call: Call, read: Callable[[QueryBudget], T], *, inline: bool = False
    ) -> T:
        """Run one read under the query budget (``query_timeout_seconds``): ``inline`` here on
        the event loop (a point read, too short to be worth watching), else on a worker thread,
        cancelled as soon as the client goes away."""
        budget = QueryBudget(self.settings.query_timeout_seconds)
        try:
            if inline:
                return read(budget)
            reading = asyncio.ensure_future(run_in_threadpool(read, budget))
            gone = asyncio.ensure_future(_disconnect(call.request.receive))
            try:
                await asyncio.wait((reading, gone), return_when=asyncio.FIRST_COMPLETED)
                if not reading.done() and gone.done() and gone.exception() is None:
                    await self._cancel(call, budget)
                return await reading
            finally:
                gone.cancel()
        except QueryBudgetExceeded as exc:
            log.warning(
                "%s %s: %s",
                call.request.method,
                call.request.url.path,
                exc,
                extra={"request_id": call.request_id},
            )
            raise

    async def _cancel(self, call: Call, budget: QueryBudget) -> None:
        log.info("the client went away; cancelling its read", extra={"request_id": call.request_id})
        try:
            # Not on the loop (a round trip on PostgreSQL), nor on Starlette's threadpool:
            # that may be full of the very reads that need cancelling.
            await asyncio.to_thread(budget.cancel)
        except Exception as exc:  # the read then runs on until its budget stops it
            log.warning("could not cancel the read: %s", exc, extra={"request_id": call.request_id})

    async def patch(self, call: Call) -> Response:
        resource_type = self.resource_type(call)
        selection = self.selection(resource_type, call.request.query_params)
        operations, tolerances = normalize_patch(
            await self.body(call), self.catalog.model(resource_type), **self.door_limits
        )
        resource_id = door.check_id(call.request.path_params["id"])
        outcome = call.wrote(
            await run_in_threadpool(
                lambda: self.provisioner.patch(
                    call.cause,
                    resource_type,
                    resource_id,
                    operations,
                    if_match=call.request.headers.get("if-match"),
                    tolerances=tolerances,
                )
            )
        )
        params = call.request.query_params
        if (
            resource_type == "Group"
            and "attributes" not in params
            and "excludedAttributes" not in params
        ):
            # RFC 7644 §3.5.2 allows 204; a group's member list can be 100k rows long, and
            # Okta and Entra both accept 204 for group PATCH. Ask with ?attributes= for a body.
            return Response(status_code=204, headers={"ETag": outcome.record.etag})
        return await self._reread(call, resource_type, resource_id, selection)

    async def delete(self, call: Call) -> Response:
        call.wrote(
            await run_in_threadpool(
                lambda: self.provisioner.delete(
                    call.cause,
                    self.resource_type(call),
                    door.check_id(call.request.path_params["id"]),
                    if_match=call.request.headers.get("if-match"),
                )
            )
        )
        return Response(status_code=204)

    async def bulk(self, call: Call) -> Response:
        body = await self.body(call)
        result = await run_in_threadpool(lambda: run_bulk(self, call, body))
        return ScimResponse(result)

    # -- discovery -------------------------------------------------------------------------

    async def service_provider_config(self, call: Call) -> Response:
        return ScimResponse(discovery.service_provider_config(self.settings, call.base_url))

    async def resource_types(self, call: Call) -> Response:
        found = discovery.resource_types(self.catalog, call.base_url)
        name = call.request.path_params.get("name")
        if name is None:
            return ScimResponse(discovery.list_response(found))
        for item in found:
            if str(item.get("id", item.get("name"))).lower() == name.lower():
                return ScimResponse(item)
        raise NotFoundException(detail=f"no resource type {name!r}")

    async def schemas(self, call: Call) -> Response:
        found = discovery.schemas(self.catalog, call.base_url)
        schema_id = call.request.path_params.get("id")
        if schema_id is None:
            return ScimResponse(discovery.list_response(found))
        for item in found:
            if str(item["id"]).lower() == schema_id.lower():
                return ScimResponse(item)
        raise NotFoundException(detail=f"no schema {schema_id!r}")

    async def openapi(self, call: Call) -> Response:
        return JSONResponse(openapi.document(self.catalog, self.settings, call.base_url))

    async def not_implemented(self, call: Call) -> Response:
        raise NotImplementedException(detail="/Me is not supported: tokens name clients, not users")

    async def not_found(self, call: Call) -> Response:
        raise NotFoundException(detail=f"no SCIM endpoint at {call.request.url.path}")

    def routes(self) -> list[Route]:
        def e(handlers: dict[str, tuple[str, Handler]]) -> Any:
            return self.endpoint(handlers)

        return [
            _route(
                "/scim/v2/ServiceProviderConfig", e({"GET": (READ, self.service_provider_config)})
            ),
            _route("/scim/v2/ResourceTypes", e({"GET": (READ, self.resource_types)})),
            _route("/scim/v2/ResourceTypes/{name}", e({"GET": (READ, self.resource_types)})),
            _route("/scim/v2/Schemas", e({"GET": (READ, self.schemas)})),
            _route("/scim/v2/Schemas/{id:path}", e({"GET": (READ, self.schemas)})),
            _route("/scim/v2/openapi.json", e({"GET": (READ, self.openapi)})),
            _route("/scim/v2/.search", e({"POST": (READ, self.search)})),
            _route("/scim/v2/Bulk", e({"POST": (WRITE, self.bulk)})),
            _route(
                "/scim/v2/Me",
                e(
                    {
                        m: (READ, self.not_implemented)
                        for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
                    }
                ),
            ),
            _route(
                "/scim/v2/{endpoint:resource}",
                e({"GET": (READ, self.list_resources), "POST": (WRITE, self.create)}),
            ),
            _route("/scim/v2/{endpoint:resource}/.search", e({"POST": (READ, self.search)})),
            _route(
                "/scim/v2/{endpoint:resource}/{id}",
                e(
                    {
                        "GET": (READ, self.get),
                        "PUT": (WRITE, self.replace),
                        "PATCH": (WRITE, self.patch),
                        "DELETE": (WRITE, self.delete),
                    }
                ),
            ),
            _route(
                "/scim/v2/{rest:path}",
                e({m: (READ, self.not_found) for m in ("GET", "POST", "PUT", "PATCH", "DELETE")}),
            ),
        ]


class _AnyMethod:
    """An endpoint as a plain ASGI app: Starlette then routes every method to it (a function
    endpoint would take GET alone), so one it does not serve, TRACE too, is a SCIM 405."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _route(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
    return Route(path, _AnyMethod(endpoint))


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


async def _disconnect(receive: Receive) -> None:
    """Return once the client has gone away (ASGI ``http.disconnect``); called after the body
    is read, or for a request without one, so no body is lost."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _no_route(request: Request, exc: Exception) -> Response:
    """A path no route matches (``/scim/v2`` itself, one holding a newline, which no path
    pattern spans): a SCIM 404 with its request id, like every other answer."""
    response = error_response(404, "no SCIM endpoint at this path")
    response.headers["X-Request-Id"] = door.request_id(request.headers.get("x-request-id"))
    return response


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def _lifespan(
    background: Sequence[Background],
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """Run background loops (the relay) for the app's lifetime; stop them on shutdown."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(loop(stop)) for loop in background]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    return lifespan


def create_app(
    provisioner: Provisioner,
    catalog: Catalog,
    settings: Settings,
    authenticate: Authenticate,
    background: Sequence[Background] = (),
    hris: HrisIntake | None = None,
    *,
    telemetry: Telemetry | None = None,
    book: RuleBook | None = None,
    admin: Sequence[BaseRoute] = (),
) -> Starlette:
    """The ASGI application: SCIM at ``/scim/v2``, ``/healthz`` (liveness), ``/readyz``
    (readiness, ``bridge.scim.ready``) and ``/metrics`` (``bridge.scim.metrics``); background
    loops alongside; with ``hris``, the HR webhooks at ``/hris/v1/events/{feed}``.

    ``telemetry``: the metrics to count into (a fresh registry by default); ``book``: the
    rule book whose refused reloads ``/readyz`` and ``/metrics`` report; ``admin``: the admin
    page's routes (``bridge.admin.app.admin_routes``)."""
    from starlette.convertors import Convertor
    from starlette.convertors import register_url_convertor

    class ResourceEndpoint(Convertor[str]):
        regex = "(?i:users|groups)"

        def convert(self, value: str) -> str:
            return value

        def to_string(self, value: str) -> str:
            return value

    register_url_convertor("resource", ResourceEndpoint())
    server = ScimServer(provisioner, catalog, settings, authenticate)
    telemetry = telemetry if telemetry is not None else Telemetry()
    rules = book.current if book is not None else provisioner.projector.rules
    telemetry.watch(state_reader(provisioner.db, rules, book))
    readiness = Readiness(provisioner.db, rules, book)
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readiness.endpoint),
            Route("/metrics", MetricsEndpoint(telemetry, authenticate).endpoint),
            *admin,
            *(hris.routes() if hris is not None else []),
            *server.routes(),
        ],
        lifespan=_lifespan(background),
        exception_handlers={404: _no_route},
    )
    # A SCIM client follows no redirect: ``/scim/v2`` (or ``/Users/..``) answers the SCIM 404
    # of ``_no_route`` rather than Starlette's 307 to the trailing-slash form.
    app.router.redirect_slashes = False
    app.add_middleware(RequestMetrics, telemetry=telemetry)
    app.state.server = server
    app.state.telemetry = telemetry
    return app
