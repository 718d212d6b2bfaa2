# zoom-qos-exporter image: the exporter in a virtual environment under /opt/zoom-qos-exporter
# (the same layout as the systemd install), non-root, with the `auth` extra for basic auth.
#
#   docker build -t zoom-qos-exporter:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -p 9924:9924 -e ZOOM_EXPORTER_DEMO=true zoom-qos-exporter:0.1.0
#
# The tag is exporter.__version__ (tests/test_deploy.py checks that VERSION below, the
# Kubernetes base, the compose file and the READMEs agree with it). deploy/README.md has the
# rest: credentials, TLS and basic auth, the state volume.

# A pinned tag: rebuild on purpose to take a newer Python or Debian.
ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/zoom-qos-exporter
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
RUN /opt/zoom-qos-exporter/bin/pip install --no-cache-dir --disable-pip-version-check ".[auth]"

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
# The git commit, for zoom_exporter_build_info: --build-arg REVISION="$(git rev-parse HEAD)".
ARG REVISION=""
LABEL org.opencontainers.image.title="zoom-qos-exporter" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.description="Prometheus exporter for the call quality (QoS) of live Zoom meetings and webinars" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/zoom-qos-exporter/zoom-qos-exporter" \
      org.opencontainers.image.documentation="https://github.com/zoom-qos-exporter/zoom-qos-exporter/blob/main/deploy/README.md"
# The state directory (--storage.path: the day's API spend survives a restart) belongs to the
# exporter's user; mount a volume there.
RUN groupadd --system --gid 10001 zoom-qos-exporter \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin zoom-qos-exporter \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/zoom-qos-exporter
COPY --from=build /opt/zoom-qos-exporter /opt/zoom-qos-exporter
ENV PATH="/opt/zoom-qos-exporter/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EXPORTER_REVISION="${REVISION}" \
    ZOOM_EXPORTER_LISTEN_ADDRESS="0.0.0.0:9924" \
    ZOOM_EXPORTER_STORAGE_PATH="/var/lib/zoom-qos-exporter"
VOLUME ["/var/lib/zoom-qos-exporter"]
USER 10001:10001
EXPOSE 9924
# GET /-/healthy on the port of ZOOM_EXPORTER_LISTEN_ADDRESS: plain HTTP, else HTTPS (TLS from
# --web.config.file), no credentials. Change the port with that variable, not with the flag.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/zoom-qos-exporter/bin/python", "-m", "exporter.healthcheck"]
# Credentials: ZOOM_EXPORTER_ACCOUNT_ID, ZOOM_EXPORTER_CLIENT_ID, ZOOM_EXPORTER_CLIENT_SECRET (or
# --secrets.dir); ZOOM_EXPORTER_DEMO=true (or the flag --demo) needs none.
ENTRYPOINT ["zoom-qos-exporter"]
CMD []
