#!/bin/sh
# make bench-server: the local server at 0, 100,000 and 1,000,000 stored events (bench/server.lua):
# ingest, track and check latency, usage queries, memory and start-up, as one markdown table.
# About 3 minutes and 1 GB of disk under .test-tmp/ (removed at the end). BENCH_SCALES="0 10000"
# for a smaller run.
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
sh tools/build.sh 5.4 >/dev/null
LUA_PATH="$(pwd)/lua/?.lua;$(pwd)/lua/?/init.lua;;" LUA_CPATH="$(pwd)/build/5.4/?.so;;" lua5.4 bench/server.lua
