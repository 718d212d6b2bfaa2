# Multi-stage build: a wheel in a builder, then a slim non-root runtime.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --no-create-home exporter
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
EXPOSE 9924
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9924/-/healthy', timeout=2).status == 200 else 1)"
ENTRYPOINT ["zoom-qos-exporter"]
# Credentials come from ZOOM_EXPORTER_* variables or --secrets.dir; `--demo` needs none.
CMD ["--web.listen-address=0.0.0.0:9924"]
