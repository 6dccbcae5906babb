#!/bin/sh
# Installs the Debian packages the demo and the tests need (as root), or prints the apt line.
set -e
PACKAGES="gcc make libc6-dev libcurl4-openssl-dev lua5.4 liblua5.4-dev lua5.3 liblua5.3-dev lua5.1 liblua5.1-0-dev luajit2 libluajit2-5.1-dev lua-cjson lua-argparse lua-busted lua-socket lua-posix lua-luv lua-curl lua-sec luarocks nginx libnginx-mod-http-lua libsqlite3-0 lua-check openssl valgrind wrk curl clang libclang-rt-14-dev python3 strace locales"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "missing Debian packages; run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y$missing" >&2
  exit 1
fi
