#!/usr/bin/env bash
# System packages the product and its tests need from the OS (Debian/Ubuntu names).
# Installs the missing ones with apt-get when this user may (root, or sudo without a password);
# otherwise prints the exact command to run and exits 1.
#
#   firmware/system-packages.sh [--check] [demo|test]
#     demo: what `make demo` needs (the broker); test (default): also the tools the tests drive.
#     --check: only report, install nothing.
set -euo pipefail

check=""
purpose="test"
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    demo|test) purpose="$arg" ;;
    *) echo "usage: $0 [--check] [demo|test]" >&2; exit 2 ;;
  esac
done

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have mosquitto || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)          # MQTT broker (tests, demo)
if [ "$purpose" = "test" ]; then
  have systemd-analyze || missing+=(systemd)                                  # unit verification
  have openssl || missing+=(openssl)                                          # certificate checks
  [ -x /usr/bin/chromium ] || missing+=(chromium)                             # officer UI tests (headless)
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
cmd="apt-get update && apt-get install -y ${missing[*]}"
if [ -n "$check" ]; then
  echo "missing system packages: ${missing[*]} (install: sudo sh -c '$cmd')"
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif have sudo && sudo -n true 2>/dev/null; then
  sudo="sudo"
else
  echo "missing system packages: ${missing[*]}"
  echo "install them with:  sudo sh -c '$cmd'"
  exit 1
fi
echo "installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
