"""A small LMS simulator (Moodle web services + Canvas REST subsets) that behaves like the real
LMS per LMS.md — for the demo, the tests and the benches.

``bridge lmssim`` serves it (``bridge.lmssim.app``): Moodle at ``/webservice/rest/server.php``,
Canvas under ``/api/v1``, each with the token below unless told another; it prints both on
start. The tokens live here, not in ``app``, so the CLI shows them without loading Starlette.
"""

SIM_MOODLE_TOKEN = "moodle-token"  # noqa: S105 - the simulator's well-known test token
SIM_CANVAS_TOKEN = "canvas-token"  # noqa: S105 - the simulator's well-known test token
