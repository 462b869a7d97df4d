#!/bin/sh
# Prints Alertmanager's configuration: alertmanager.yml (routes, inhibition) followed by the
# receivers, built from the environment and secret files, because Alertmanager's configuration
# reads no variables. Compose runs it at the container's start (busybox sh), then Alertmanager
# on its output (docs/deploying.md, "Where alerts go"):
#   operators  a webhook: the URL in the file ALERT_WEBHOOK_URL_FILE, and/or e-mail to
#              ALERT_EMAIL_TO from ALERT_EMAIL_FROM through ALERT_SMTP_SMARTHOST (host:port),
#              logging in as ALERT_SMTP_USERNAME (if set) with ALERT_SMTP_PASSWORD_FILE
#   heartbeat  the Watchdog, every 5 minutes: the URL in the file ALERT_HEARTBEAT_URL_FILE
#              (a dead-man's switch service that pages when it stops hearing it)
# An unset one delivers nowhere. A webhook URL is written into the output (Alertmanager masks
# it in its API); `url_file` would keep it out, but the Alertmanager Debian ships (the tests'
# one) predates it. The SMTP password stays in its file (auth_password_file).
#   sh receivers.sh [alertmanager.yml] > config.yml
set -eu

# The first line of a secret file, blank when unset, missing or empty.
secret() { if [ -n "$1" ] && [ -s "$1" ]; then head -n 1 "$1" | tr -d ' \t\r'; fi; }

# Values go into double-quoted YAML scalars: refuse what could break out of one.
check() {
    case $2 in
        *'"'* | *'\'*) echo "receivers.sh: $1 holds a double quote or a backslash" >&2; exit 78 ;;
    esac
}

webhook=$(secret "${ALERT_WEBHOOK_URL_FILE:-}")
heartbeat=$(secret "${ALERT_HEARTBEAT_URL_FILE:-}")
check ALERT_WEBHOOK_URL_FILE "$webhook"
check ALERT_HEARTBEAT_URL_FILE "$heartbeat"
for name in ALERT_EMAIL_TO ALERT_EMAIL_FROM ALERT_SMTP_SMARTHOST ALERT_SMTP_USERNAME ALERT_SMTP_PASSWORD_FILE; do
    eval "check $name \"\${$name:-}\""
done

cat "${1:-/etc/alertmanager/alertmanager.yml}"
echo "receivers:"
echo "  - name: operators"
if [ -n "$webhook" ]; then
    printf '    webhook_configs: [{url: "%s"}]\n' "$webhook"
fi
if [ -n "${ALERT_EMAIL_TO:-}" ]; then
    printf '    email_configs:\n      - {to: "%s", from: "%s", smarthost: "%s", send_resolved: true' \
        "$ALERT_EMAIL_TO" "${ALERT_EMAIL_FROM:-}" "${ALERT_SMTP_SMARTHOST:-}"
    if [ -n "${ALERT_SMTP_USERNAME:-}" ]; then
        printf ', auth_username: "%s", auth_password_file: "%s"' "$ALERT_SMTP_USERNAME" \
            "${ALERT_SMTP_PASSWORD_FILE:-}"
    fi
    echo "}"
fi
echo "  - name: heartbeat"
if [ -n "$heartbeat" ]; then
    printf '    webhook_configs: [{url: "%s", send_resolved: false}]\n' "$heartbeat"
fi
