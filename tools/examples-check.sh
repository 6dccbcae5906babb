#!/bin/sh
# Runs every example script as the README shows it, against a local server with the sample data.
set -eu
cd "$(dirname "$0")/.."
DIR="$(pwd)/.test-tmp/examples-server"
eval "$(lua5.4 server/limitry-local start --dir "$DIR")"
export LIMITRY_BASE_URL LIMITRY_API_KEY
trap 'lua5.4 server/limitry-local stop --dir "$DIR" >/dev/null' EXIT
out=$(lua5.4 examples/report.lua)
echo "$out" | grep -q "events  *17,360" || { echo "$out"; echo "report.lua: unexpected output"; exit 1; }
echo "$out" | grep -q "2024-01-31 #" || { echo "$out"; echo "report.lua: no bar for Jan 31"; exit 1; }
lua5.4 examples/report.lua 2024-02 cust_acme | grep -q "Usage 2024-02 for cust_acme"
luajit examples/report.lua 2024-03 | grep -q "Cost per day"
out=$(lua5.4 examples/errors.lua)
echo "$out" | grep -q "AuthenticationError" || { echo "$out"; exit 1; }
echo "$out" | grep -q "raised:	true" || { echo "$out"; exit 1; }
out=$(lua5.4 examples/game_server.lua 3 500) || { echo "$out"; echo "game_server.lua failed"; exit 1; }
echo "$out" | grep -q "every player refused: true" || { echo "$out"; exit 1; }
luajit examples/game_server.lua 2 300 | grep -q "4 talks recorded, 4 delivered"
echo "examples ok"
