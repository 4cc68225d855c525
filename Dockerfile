# The image the Helm chart runs: the `coordshard` CLI with the operator and
# the service installed (`coordshard operator`, `coordshard worker`).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[operator,service]"

FROM python:3.11-slim
RUN useradd --uid 10001 --no-create-home coordshard
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "coordshard[operator,service]" \
    && rm -rf /wheels
USER 10001
ENTRYPOINT ["coordshard"]
