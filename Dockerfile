# The bridge: SCIM 2.0 server, relay and scheduler, on SQLite (a /data volume) or PostgreSQL.
#
#   docker build -t scim-lms-bridge .
#   docker run -p 8000:8000 -e BRIDGE_SCIM_TOKEN=… -e MOODLE_TOKEN=… \
#     -v "$PWD/my-rules:/app/rules:ro" -v bridge-data:/data scim-lms-bridge
#
# The shipped rules are the default in /app/rules; their targets.yaml points at 127.0.0.1, so
# mount a rules directory of your own there (targets.yaml with your LMS's base_url). Tokens and
# credentials come from the environment only (the variables targets.yaml names), never baked.
# `bridge relay` answers no HTTP: run it with --no-healthcheck (compose.yaml does).
# PYTHON_IMAGE: a mirror's or your registry's copy of the same image (--build-arg).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home bridge

WORKDIR /app

# Dependencies first, from pyproject.toml alone (with the postgres extra and the build
# backend): this layer is rebuilt when the dependencies change, not when the code does.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(p['build-system']['requires'] + p['project']['dependencies'] \
+ p['project']['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code: installed without touching the dependencies (no network needed from here on).
COPY README.md ./
COPY bridge ./bridge
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info
COPY schemas ./schemas
COPY rules ./rules

ENV BRIDGE_DATABASE_URL=sqlite:////data/bridge.db \
    BRIDGE_SCHEMAS=/app/schemas \
    BRIDGE_RULES=/app/rules \
    BRIDGE_LOG_FORMAT=json

USER bridge:bridge
VOLUME ["/data"]
EXPOSE 8000
# Ready: the database reachable and migrated, the rules loaded, each target's preflight passed
# (503 with the reasons otherwise): Docker marks the container unhealthy; a load balancer
# probing /readyz stops sending it requests.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["bridge", "serve", "--host", "0.0.0.0", "--port", "8000"]
