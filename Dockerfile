# The image the Helm chart runs: the `coordshard` CLI with the operator and
# the service installed (`coordshard operator`, `coordshard worker`).
# tests/unit/test_dockerfile.py checks that it parses, that every COPY source
# exists, that the base is pinned and that it runs as the chart's non-root user.
# The base is the Python the CI tests on, pinned to its patch release.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[operator,service]"

FROM python:3.11.7-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 coordshard \
    && useradd --uid 10001 --gid 10001 --no-create-home coordshard
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "coordshard[operator,service]" \
    && rm -rf /wheels
# Numeric, so that Kubernetes' runAsNonRoot can verify it (the chart's runAsUser).
USER 10001:10001
ENTRYPOINT ["coordshard"]
