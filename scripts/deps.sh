#!/bin/sh
# Installs the Debian packages proxd needs to build and test, only those missing
# (postgresql: the server the store tests start privately; ansible and packer: third-party
# clients the pvesim tests drive; none of these is needed at run time).
# Called by make (demo, test, all); needs root (or sudo) when something is missing.
set -eu
PKGS="build-essential cmake pkg-config libssl-dev libcurl4-openssl-dev libjansson-dev libyajl-dev
libpcre2-dev libhttp-parser-dev libsqlite3-dev libpq-dev libsodium-dev libinih-dev libcrypt-dev libsystemd-dev
libcmocka-dev postgresql python3 python3-proxmoxer python3-requests openssl ca-certificates valgrind
openssh-client util-linux curl ansible packer"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
