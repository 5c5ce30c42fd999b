# envflow's worker and scheduler image: a miniconda-family base, one named conda env per
# envs/*.yml, and envflow in its own venv made from the image's Python (flow envs never get it).
# Layers go from the slowest-changing to the fastest: envs, envflow's dependencies, its source.
# docs/run-with-docker.md has the commands and the expected size of each layer.

# conda-forge's twin of continuumio/miniconda3; swap with
#   docker build --build-arg BASE_IMAGE=continuumio/miniconda3:25.3.1-1 .
# (its base env comes from Anaconda's defaults channel: see the licence note in the docs).
ARG BASE_IMAGE=condaforge/miniforge3:25.11.0-0
FROM ${BASE_IMAGE} AS envflow
LABEL org.opencontainers.image.title="envflow" \
      org.opencontainers.image.description="envflow worker/scheduler: Python flows in conda envs and venvs, on RQ" \
      org.opencontainers.image.licenses="MIT"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# tini as PID 1 forwards SIGTERM to the worker (graceful stop) and reaps zombies; miniforge3
# ships it, miniconda3 does not. The user has a fixed uid/gid so mounted venvs and volumes
# get predictable ownership; /var/lib/envflow/envs (built envs) belongs to it, so a named volume
# mounted there starts out writable by the workers (Docker copies the directory's owner into it).
# DL3008 (pin apt versions) is ignored: the two bases are different distros (Ubuntu, Debian),
# so no apt version string fits both; the base image tag pins the release, and so tini's version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 envflow \
    && useradd --no-log-init --uid 10001 --gid 10001 --create-home --home-dir /home/envflow --shell /bin/bash envflow \
    && install --directory --owner=10001 --group=10001 /var/lib/envflow /var/lib/envflow/envs \
    && install --directory /project /venvs

# Flow environments: every envs/*.yml becomes the conda env its `name:` says, from conda-forge
# only (the system .condarc drops Anaconda's defaults channel for both bases).
COPY envs/ /usr/local/share/envflow/envs/
RUN printf 'channels:\n  - conda-forge\nchannel_priority: strict\nnotify_outdated_conda: false\nnumber_channel_notices: 0\n' \
        > /opt/conda/.condarc \
    && for file in /usr/local/share/envflow/envs/*.yml; do conda env create --quiet --file "$file" || exit 1; done \
    && conda clean -afy \
    && find /opt/conda -follow -type f \( -name '*.a' -o -name '*.js.map' \) -delete

# envflow's dependencies and its ui extra (the web UI's: Starlette, uvicorn, Jinja2,
# prometheus_client), from pyproject.toml, in a venv so pip never touches conda's base env.
# Workers and the scheduler never import the ui extra; only `envflow ui` does.
COPY pyproject.toml /usr/local/src/envflow/
RUN /opt/conda/bin/python -m venv /opt/envflow \
    && /opt/conda/bin/python -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["ui"]))' \
        /usr/local/src/envflow/pyproject.toml > /tmp/requirements.txt \
    && /opt/envflow/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# envflow itself: the only layers a code change rebuilds.
COPY README.md /usr/local/src/envflow/
COPY envflow/ /usr/local/src/envflow/envflow/
COPY worker/ /usr/local/src/envflow/worker/
COPY scheduler/ /usr/local/src/envflow/scheduler/
RUN /opt/envflow/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /usr/local/src/envflow \
    && rm -rf /usr/local/src/envflow/build /usr/local/src/envflow/*.egg-info \
    && /opt/envflow/bin/envflow --version

ENV PATH=/opt/envflow/bin:/opt/conda/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ENVFLOW_CONDA_ROOT=/opt/conda \
    ENVFLOW_ENV_ROOTS=/opt/conda:/venvs \
    ENVFLOW_STATE_DIR=/var/lib/envflow
WORKDIR /project
USER 10001:10001

# Healthy = Redis answers and a worker of this container is registered. The scheduler service
# overrides it in compose.yaml.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["envflow", "worker", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["envflow", "worker", "start"]
