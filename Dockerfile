# The bridge: SCIM 2.0 server and relay, on the embedded SQLite default or PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BRIDGE_DATABASE_URL=sqlite:////data/bridge.db \
    BRIDGE_SCHEMAS=/app/schemas \
    BRIDGE_RULES=/app/rules \
    BRIDGE_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install . && useradd --system --uid 10001 --home-dir /data --create-home bridge
COPY schemas ./schemas
COPY rules ./rules

USER bridge
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["bridge", "serve", "--host", "0.0.0.0", "--port", "8000"]
