#!/usr/bin/env bash
# Install the booking-station systemd units, their users (sysusers.d) and directories (tmpfiles.d).
#
#   systemd/install.sh --side device [--jetson-csi] [--bin-dir DIR] [--root DIR] [--enable] [--dry-run]
#   systemd/install.sh --side county [--bin-dir DIR] [--root DIR] [--enable] [--dry-run]
#
#   --side device   booking-station.service, booking-station-sync.service, user booking-station
#   --side county   booking-gallery.service, booking-gallery-enroll.service, users booking-gallery
#                   and booking-enroll
#   --side all      both (a demo box that is station and county at once)
#   --bin-dir DIR   where the booking-station / booking-gallery commands are (default /usr/bin;
#                   e.g. /opt/booking-station/venv/bin); ExecStart= lines are rewritten to it
#   --root DIR      install into an image or a staging tree instead of the running system
#   --jetson-csi    add the drop-in a Jetson CSI camera (nvarguscamerasrc) needs
#   --enable        enable the units (they start at boot; start them now with systemctl start)
#   --dry-run       print what would be done, do nothing
#
# Units go to ROOT/etc/systemd/system, users to ROOT/etc/sysusers.d, directories to
# ROOT/etc/tmpfiles.d. Users and directories are created at once (systemd-sysusers,
# systemd-tmpfiles, with --root for an image); systemctl daemon-reload runs only when the target
# is the running system and systemd is PID 1. Every step is printed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
side=""
root="/"
bin_dir="/usr/bin"
jetson_csi=0
enable=0
dry_run=0

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --side) side="${2:-}"; shift 2 ;;
    --side=*) side="${1#*=}"; shift ;;
    --root) root="${2:-}"; shift 2 ;;
    --root=*) root="${1#*=}"; shift ;;
    --bin-dir) bin_dir="${2:-}"; shift 2 ;;
    --bin-dir=*) bin_dir="${1#*=}"; shift ;;
    --jetson-csi) jetson_csi=1; shift ;;
    --enable) enable=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

case "$side" in
  device) units=(booking-station.service booking-station-sync.service); sides=(booking-station) ;;
  county) units=(booking-gallery.service booking-gallery-enroll.service); sides=(booking-gallery) ;;
  all) units=(booking-station.service booking-station-sync.service booking-gallery.service
              booking-gallery-enroll.service); sides=(booking-station booking-gallery) ;;
  "") usage >&2; die "--side device|county|all is required" ;;
  *) die "--side must be device, county or all, not '$side'" ;;
esac
[ -n "$root" ] || die "--root needs a directory"
[ -n "$bin_dir" ] || die "--bin-dir needs a directory"
case "$bin_dir" in /*) ;; *) die "--bin-dir must be an absolute path (systemd requires one in ExecStart=)" ;; esac
if [ "$jetson_csi" = 1 ] && [ "$side" = county ]; then die "--jetson-csi is for the device side"; fi
root="${root%/}"
target="${root:-}"

run() {
  echo "+ $*"
  if [ "$dry_run" = 0 ]; then "$@"; fi
}

# Copy a file with mode 0644, rewriting ExecStart's /usr/bin/ to --bin-dir.
put() {
  local src="$1" dst="$2"
  echo "+ install -m 0644 $src $dst${3:+ (ExecStart in $bin_dir)}"
  if [ "$dry_run" = 0 ]; then
    mkdir -p "$(dirname "$dst")"
    if [ -n "${3:-}" ]; then
      sed "s#^ExecStart=/usr/bin/booking-#ExecStart=${bin_dir}/booking-#" "$src" > "$dst.tmp.$$"
    else
      cp "$src" "$dst.tmp.$$"
    fi
    chmod 0644 "$dst.tmp.$$"
    mv -f "$dst.tmp.$$" "$dst"
  fi
}

for b in booking-station booking-gallery; do
  needed=0
  for u in "${units[@]}"; do case "$u" in "$b"*) needed=1 ;; esac; done
  if [ "$needed" = 1 ] && [ "$dry_run" = 0 ] && [ "$target" = "" ] && [ ! -x "$bin_dir/$b" ]; then
    echo "warning: $bin_dir/$b does not exist yet; the units will fail until it is installed (see --bin-dir)" >&2
  fi
done

for u in "${units[@]}"; do
  put "$here/$u" "$target/etc/systemd/system/$u" rewrite
done
if [ "$jetson_csi" = 1 ]; then
  put "$here/dropins/jetson-csi.conf" "$target/etc/systemd/system/booking-station.service.d/jetson-csi.conf"
fi
sysusers=()
tmpfiles=()
for s in "${sides[@]}"; do
  put "$here/sysusers.d/$s.conf" "$target/etc/sysusers.d/$s.conf"
  put "$here/tmpfiles.d/$s.conf" "$target/etc/tmpfiles.d/$s.conf"
  sysusers+=("$target/etc/sysusers.d/$s.conf")
  tmpfiles+=("$target/etc/tmpfiles.d/$s.conf")
done

if [ "$target" = "" ]; then
  run systemd-sysusers "${sysusers[@]}"
  run systemd-tmpfiles --create "${tmpfiles[@]}"
  if [ -d /run/systemd/system ]; then
    run systemctl daemon-reload
  else
    echo "systemd is not running here: skipped systemctl daemon-reload"
  fi
  if [ "$enable" = 1 ]; then run systemctl enable "${units[@]}"; fi
else
  run systemd-sysusers --root="$target" "${sysusers[@]}"
  run systemd-tmpfiles --root="$target" --create "${tmpfiles[@]}"
  if [ "$enable" = 1 ]; then run systemctl --root="$target" enable "${units[@]}"; fi
fi

echo "installed: ${units[*]}"
case "$side" in
  device|all) echo "next (device): booking-station provision ...; then systemctl start booking-station booking-station-sync" ;;
esac
case "$side" in
  county|all) echo "next (county): sudo -u booking-enroll booking-gallery ca init --dir /var/lib/booking-enroll --county ID;" \
                   "a TLS certificate in /etc/booking-enroll/tls.crt and tls.key (readable by group booking-enroll);" \
                   "then systemctl start booking-gallery-enroll booking-gallery" ;;
esac
