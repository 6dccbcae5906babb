#!/bin/sh
# make profile: callgrind of 2,000 sequential limitry calls on Lua 5.4 (CALLS=N for another count);
# the top 30 functions, inclusive and exclusive, go to build/bench/profile.txt (see bench/profile.lua).
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
sh tools/build.sh 5.4
mkdir -p build/bench
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy no_proxy NO_PROXY
exec lua5.4 bench/profile.lua
