#!/usr/bin/env bash
# Create the Docker volumes that hold the stores' data (docker-compose.yml, `volumes:`).
#
#   bash scripts/make-volumes.sh     # once, before the first `docker compose up`
#
# Why external volumes: `docker compose down -v` removes the volumes compose created, never an
# external one, so a clean-up cannot delete the events, the trend history or the queued
# batches. Deleting one is a deliberate `docker volume rm <name>`.
#
# Each is named ${VOLUME_PREFIX}_<volume> (VOLUME_PREFIX from the environment or .env; blank:
# aggregator). All five are created whatever COMPOSE_PROFILES says: an unused one stays empty.
# Creating a volume that exists changes nothing, so a deployment of 0.1.0 keeps its data by
# setting VOLUME_PREFIX to its compose project's name (`docker volume ls`: <project>_postgres-data).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${VOLUME_PREFIX:-}
if [[ -z $prefix && -f .env ]]; then
    prefix=$(sed -n 's/^VOLUME_PREFIX=//p' .env | tail -1)
    prefix=${prefix%\"}; prefix=${prefix#\"}
fi
prefix=${prefix:-aggregator}

for volume in kafka-data redis-data influxdb-data influxdb-config postgres-data; do
    docker volume create "${prefix}_$volume" > /dev/null
    echo "volume   ${prefix}_$volume"
done
