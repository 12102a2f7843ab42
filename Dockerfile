# ingest-exporter container image.
#   docker build -t ingest-exporter .
#   docker run -p 9817:9817 -e TIMESCALEDB_URL=... -e REDIS_URL=... -e KAFKA_BROKERS=... ingest-exporter
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY exporter ./exporter
RUN python -m pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin exporter
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels ingest-exporter \
    && rm -rf /wheels
USER 10001
EXPOSE 9817
# Liveness without curl in the image: the daemon's own /-/healthy.
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9817/-/healthy', timeout=2).status != 200)"]
# Exec form: the daemon is PID 1 and receives SIGTERM directly for its graceful stop.
ENTRYPOINT ["ingest-exporter"]
CMD ["run", "--web.listen-address", ":9817"]
