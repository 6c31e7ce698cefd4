"""Moodle's REST protocol for the simulator: ``POST /webservice/rest/server.php`` (LMS.md).

As Moodle 4.3 serves it: PHP form arrays truncated at ``max_input_vars``, JSON bodies ignored,
XML unless ``moodlewsrestformat=json``, every answer HTTP 200, errors included, and HTTP 403
with an empty body when the REST protocol is disabled. A call carrying more form fields than
the site's ``max_input_vars`` loses the rest, as PHP drops them: the function then fails with
"Missing required key" (or, cut between two rows, silently carries fewer rows). Each call takes
the time a real site would (``bridge.lmssim.cost``) when the service times say so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from html import escape
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Route

from bridge.lmssim.cost import ServiceTime
from bridge.lmssim.cost import moodle_rows
from bridge.lmssim.cost import moodle_seconds
from bridge.lmssim.cost import spend
from bridge.lmssim.moodle_ws import WsError

if TYPE_CHECKING:
    from bridge.lmssim.moodle import MoodleSite

PATH = "/webservice/rest/server.php"
PhpValue = str | dict[str, "PhpValue"]


def php_form(pairs: Iterable[tuple[str, str]]) -> dict[str, PhpValue]:
    """Form fields as PHP builds ``$_POST``: ``users[0][username]=x`` → nested arrays.

    Arrays stay dicts keyed by strings in arrival order (PHP arrays are ordered maps); ``[]``
    appends at the next integer key; a later scalar or array replaces an earlier one.
    """
    root: dict[str, PhpValue] = {}
    for name, value in pairs:
        match = re.fullmatch(r"([^\[]+)((?:\[[^\]]*\])*)", name)
        if match is None:
            root[name] = value
            continue
        keys = [match.group(1), *re.findall(r"\[([^\]]*)\]", match.group(2))]
        node = root
        for index, key in enumerate(keys):
            if key == "":
                key = str(max((int(k) + 1 for k in node if k.isdigit()), default=0))
            if index == len(keys) - 1:
                node[key] = value
                break
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
    return root


def to_xml(value: Any) -> str:
    """A result in Moodle's REST XML (``webservice_rest_server::xmlize_result``)."""
    if isinstance(value, dict):
        keys = "".join(f'<KEY name="{escape(k)}">{to_xml(v)}</KEY>\n' for k, v in value.items())
        return f"<SINGLE>\n{keys}</SINGLE>\n"
    if isinstance(value, list):
        return "<MULTIPLE>\n" + "".join(to_xml(v) for v in value) + "</MULTIPLE>\n"
    if value is None:
        return '<VALUE null="null"/>\n'
    if isinstance(value, bool):
        value = int(value)
    return f"<VALUE>{escape(str(value), quote=False)}</VALUE>\n"


XML_HEAD = '<?xml version="1.0" encoding="UTF-8" ?>\n'


def render(result: Any, error: WsError | None, restformat: str, debug: bool) -> Response:
    """Every answer is HTTP 200, errors included (LMS.md)."""
    if restformat == "json":
        body = json.dumps(error.render(debug) if error else result)
        return Response(body, 200, media_type="application/json")
    if error is not None:
        answer = error.render(debug)
        debuginfo = answer.get("debuginfo")
        xml = (
            f'{XML_HEAD}<EXCEPTION class="{escape(error.exception)}">\n'
            f"<ERRORCODE>{escape(error.errorcode)}</ERRORCODE>\n"
            f"<MESSAGE>{escape(answer['message'])}</MESSAGE>\n"
            + (f"<DEBUGINFO>{escape(debuginfo)}</DEBUGINFO>\n" if debuginfo else "")
            + "</EXCEPTION>\n"
        )
    else:
        xml = f"{XML_HEAD}<RESPONSE>\n{'' if result is None else to_xml(result)}</RESPONSE>\n"
    return Response(xml, 200, media_type="application/xml; charset=utf-8")


def routes(site: MoodleSite, times: ServiceTime | None = None) -> list[BaseRoute]:
    """``/webservice/rest/server.php`` for ``site``, each call taking ``times`` (None: no time)."""

    async def server(request: Request) -> Response:
        if not site.rest_enabled:  # the REST protocol disabled: 403, empty body (LMS.md)
            return Response(b"", 403)
        limit = site.max_input_vars  # PHP drops the fields past max_input_vars, silently
        get = php_form(request.query_params.multi_items()[:limit])
        post: dict[str, PhpValue] = {}
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and media == "application/x-www-form-urlencoded":
            body = (await request.body()).decode("utf-8", "replace")
            post = php_form(parse_qsl(body, keep_blank_values=True)[:limit])
        # Anything else (a JSON body above all) never reaches $_POST: PHP ignores it.
        variables: dict[str, PhpValue] = {**get, **post}
        function = variables.get("wsfunction")
        if isinstance(function, str) and site.unavailable.get(function, 0) > 0:
            site.unavailable[function] -= 1  # an injected fault: the call never runs
            return Response(b"Service Unavailable", 503, {"Retry-After": "1"})
        if times is not None:  # before the call runs: its effects show when it answers
            await spend(moodle_seconds(times, moodle_rows(variables)))
        restformat = variables.pop("moodlewsrestformat", "xml")
        restformat = restformat if restformat in ("xml", "json") else "xml"
        token = variables.pop("wstoken", None)
        function = variables.pop("wsfunction", None)
        try:
            result = site.call(
                token if isinstance(token, str) else None,
                function if isinstance(function, str) else None,
                variables,
            )
        except WsError as error:
            return render(None, error, str(restformat), site.debug)
        return render(result, None, str(restformat), site.debug)

    return [Route(PATH, server, methods=["GET", "POST"])]
