#!/usr/bin/env bash
# Debian packages `make bench-compare` needs, installed only when missing, and only as root:
# nginx + libnginx-mod-rtmp (the RTMP relay compared against), mosquitto (the MQTT broker),
# iperf3 (loopback limit), ffmpeg (encodes the clip, publishes to nginx-rtmp), iproute2 (ss).
set -euo pipefail

have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for package in nginx libnginx-mod-rtmp mosquitto iperf3 ffmpeg iproute2 util-linux; do
    have "$package" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}"
apt-get update -qq
# the benchmark starts its own servers; the packages' own services are not needed
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
