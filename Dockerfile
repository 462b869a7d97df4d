# One image for every product process: the bridge, the Celery workers, beat, Flower and
# the one-shot `aggregator setup`. docker-compose.yml chooses the command of each service,
# so there is no ENTRYPOINT, and it defines the healthchecks (`aggregator health ...`),
# which differ per process, so there is no HEALTHCHECK here either.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Non-root: a worker that runs a compromised dependency's code should not own the container.
# /data is beat's schedule file (a named volume; Docker copies this ownership into it).
RUN groupadd --system --gid 10001 aggregator \
 && useradd --system --uid 10001 --gid aggregator --home-dir /home/aggregator --create-home \
      --shell /usr/sbin/nologin aggregator \
 && mkdir -p /data \
 && chown aggregator:aggregator /data

# Only what the package needs: no tests, no bench, no dev extras. Every runtime dependency
# ships manylinux wheels (confluent-kafka bundles librdkafka, psycopg2-binary libpq), so no
# compiler is needed. The sources are removed after the install so that the code that runs
# is the installed package, the same for `celery -A worker.app` and `aggregator`.
WORKDIR /src
COPY pyproject.toml README.md celeryconfig.py ./
COPY worker ./worker
COPY tasks ./tasks
RUN pip install . \
 && cd / \
 && rm -rf /src

WORKDIR /home/aggregator
USER aggregator

CMD ["aggregator", "--help"]
