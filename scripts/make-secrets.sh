#!/usr/bin/env bash
# Create the secret files docker-compose.yml hands to its services as Docker secrets.
#
#   bash scripts/make-secrets.sh            # in SECRETS_DIR (default ./secrets, or as in .env)
#
# Why files: a secret in .env reaches the containers as an environment variable, visible in
# `docker inspect` and in every process's environment; a Docker secret is a read-only file
# at /run/secrets/<name>, read through the settings' <NAME>_FILE variables.
#
# Only missing files are created, never overwritten: random passwords and token for the
# stores compose starts, empty redis_ca, postgres_ca and kafka_ca (the CAs, for TLS), an empty
# kafka_sasl_password (no SASL), empty X keys (the morning post then runs dry) and alert_* files
# (Alertmanager's receivers then deliver nowhere: docs/deploying.md, "Where alerts go"). For services outside compose (an amba system's
# PostgreSQL and InfluxDB, a Redis of your own) write their passwords and token into
# postgres_password, influxdb_token and redis_password yourself. The directory is 0700 (private on the host);
# the files are 0644 because the containers read them as their own users (PostgreSQL's,
# InfluxDB's, the product's uid 10001): the directory keeps them private.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${SECRETS_DIR:-}
if [[ -z $dir && -f .env ]]; then
    dir=$(sed -n 's/^SECRETS_DIR=//p' .env | tail -1)
    dir=${dir%\"}; dir=${dir#\"}
fi
dir=${dir:-./secrets}

install -d -m 700 "$dir"
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
for name in redis_password redis_ca postgres_password postgres_ca influxdb_token influxdb_admin_password \
            x_consumer_key x_consumer_secret x_access_token x_access_token_secret \
            alert_webhook_url alert_heartbeat_url alert_smtp_password kafka_sasl_password kafka_ca; do
    path="$dir/$name"
    if [[ -e $path ]]; then
        echo "kept     $path"
        continue
    fi
    case $name in
        redis_ca | postgres_ca | x_* | alert_* | kafka_*) : > "$path" ;;
        *) random > "$path" ;;
    esac
    chmod 644 "$path"
    echo "created  $path"
done
