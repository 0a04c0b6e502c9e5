#!/usr/bin/env bash
# Installs the Debian packages the stack and the tests use, when missing and running as root.
# Not root: prints what to install and fails, so nothing is half set up.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v mvn >/dev/null || need+=(maven)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
for extra in "$@"; do
  case "$extra" in
    chromium) command -v chromium >/dev/null || need+=(chromium) ;;
    wrk) command -v wrk >/dev/null || need+=(wrk) ;;
    nodejs) command -v node >/dev/null && command -v npm >/dev/null || need+=(nodejs npm) ;;
    # promtool checks and unit-tests the alerting rules; Debian ships it in prometheus.
    promtool) command -v promtool >/dev/null || need+=(prometheus) ;;
    *) need+=("$extra") ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing Debian packages: ${need[*]} — install them (apt-get install ${need[*]}) and retry" >&2
  exit 1
fi
echo "[deps] apt-get install ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
