# A slim image that runs `portraits serve` against DATABASE_URL (no embedded PostgreSQL inside).
#   docker build -t portraits .
#   docker run -p 8000:8000 -e DATABASE_URL=postgresql://... -e JWT_SECRET=... portraits
# Objects go to S3 when S3_ENDPOINT_URL (or OBJECT_STORE=s3) is set; otherwise to
# /app/data/objects, which then needs a volume to outlive the container.
# Traces go to an OpenTelemetry collector when OTEL_EXPORTER_OTLP_ENDPOINT is set (-e
# OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318); the packages are in the image either way.
# GraphiQL's scripts and styles are in the image, so GraphiQL works without internet (server/graphiql_assets.py).

# GraphiQL's files: npm installs the versions and integrity hashes of the committed lock, running none of the
# packages' scripts; only the files the server serves (server/graphiql_assets.py: THIRD_PARTY) go on.
FROM node:20-slim AS graphiql
WORKDIR /graphiql
COPY server/graphiql/package.json server/graphiql/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
    && mkdir /assets \
    && cd node_modules \
    && cp --parents \
        react/umd/react.production.min.js \
        react-dom/umd/react-dom.production.min.js \
        graphiql/graphiql.min.js \
        graphiql/graphiql.min.css \
        graphiql/package.json \
        @graphiql/plugin-explorer/dist/index.umd.js \
        @graphiql/plugin-explorer/dist/style.css \
        /assets/

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY graph ./graph
COPY resolvers ./resolvers
COPY realtime ./realtime
COPY storage ./storage
COPY pipeline ./pipeline
COPY devtools ./devtools
COPY observability ./observability
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --create-home --home-dir /app portraits
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY --from=graphiql /assets /opt/graphiql
USER portraits
WORKDIR /app
ENV PORTRAITS_ENV=production \
    PORTRAITS_DATA_DIR=/app/data \
    HOST=0.0.0.0 \
    PORT=8000 \
    PYTHONUNBUFFERED=1 \
    GRAPHIQL_ASSETS_DIR=/opt/graphiql
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=2).status == 200 else 1)"
CMD ["portraits", "serve"]
