#!/usr/bin/env bash
# The Debian packages the product's dev stack and tests start or build with, installed only
# where missing: redis-server and PostgreSQL (their binaries), Node.js and npm (the Flux
# compiler check), python3-venv, libpq-dev + gcc (psycopg2 from source, for the test
# extra's amba-event-stream), prometheus (its promtool tests the alert rules) and
# prometheus-alertmanager (amtool and Alertmanager test its configuration). Run as
# root. Only what is missing is asked for, so a machine whose Node.js came from NodeSource
# (its nodejs ships npm, and Debian's npm conflicts with it) is left as it is. Used by the
# README's first command and by .ci/run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v pg_config >/dev/null 2>&1 || need+=(libpq-dev)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
# promtool: the alert rules' unit tests (monitoring/prometheus/alerts_test.yml)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# amtool and Alertmanager: the receivers' configuration and routing (tests/monitoring/). On a
# host with systemd the package also starts a service on :9093; `systemctl disable --now
# prometheus-alertmanager` if that port is wanted.
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
if [ "${#need[@]}" -eq 0 ]; then
    echo "system packages: all present"
    exit 0
fi
echo "system packages: installing ${need[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
