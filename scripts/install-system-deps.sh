#!/usr/bin/env bash
# Install the Debian packages pinkrelay's build and tests need, only when missing.
# Runs apt-get only as root; otherwise it names what is missing and stops.
set -euo pipefail

needed=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# chromium and a font: the web control room's tests drive a real headless browser; ffmpeg (ffprobe) reads the evidence recordings;
# openssl makes the certificate of the HTTPS test; prometheus (with promtool) scrapes
# the relay and checks the shipped rules; systemd's systemd-analyze checks the unit;
# GStreamer's RTSP server (through Debian's python3-gi) is the IP camera of the camera-bridge tests;
# nftables (nft) cuts one relay of the cluster off in its partition test; libasan8 and libubsan1
# are the sanitizers of make sanitize's build of the compiled core.
for package in gcc python3-dev python3-venv chromium fonts-dejavu-core openssl prometheus systemd ffmpeg nftables \
        libasan8 libubsan1 \
        python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
        gstreamer1.0-plugins-good gstreamer1.0-plugins-bad; do
    have "$package" || needed+=("$package")
done
# Python.h for the Cython build: satisfied by any python3.11 with headers.
if python3.11 -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' 2>/dev/null; then
    needed=("${needed[@]/python3-dev}")
fi
if python3.11 -m venv --help >/dev/null 2>&1; then
    needed=("${needed[@]/python3-venv}")
fi
command -v gcc >/dev/null 2>&1 && needed=("${needed[@]/gcc}")
[ -x /usr/bin/chromium ] && needed=("${needed[@]/chromium}")

missing=()
for package in "${needed[@]}"; do [ -n "$package" ] && missing+=("$package"); done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
