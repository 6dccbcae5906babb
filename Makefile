# Developer entry points. The two that matter:
#   make demo   start the local server with sample data and print a usage report
#               (make demo-enforce: a customer tracking calls until a quota and a rate limit say no)
#   make test   run every suite (Lua 5.4, 5.3, 5.1, LuaJIT, the server, valgrind, the rock install)
# Both install missing Debian packages first when run as root (and print the apt line otherwise).
# Where make itself is missing, `sh tools/demo.sh` and `sh tools/test.sh` do the same.

CURL_INCDIR ?= /usr/include/x86_64-linux-gnu
LUA ?= 5.4

.PHONY: demo demo-enforce test test-quick build ubsan asan fuzz differential valgrind rock bench bench-server profile clean

demo:
	@sh tools/demo.sh

demo-enforce:
	@DEMO=enforce sh tools/demo.sh

test:
	@sh tools/test.sh

# The client specs on one Lua, no valgrind: make test-quick LUA=5.1
test-quick:
	@sh tools/test.sh quick $(LUA)

build:
	@sh tools/build.sh 5.4 5.3 5.1 luajit

# The client specs on Lua 5.4 with UndefinedBehaviorSanitizer (valgrind covers memory errors).
ubsan:
	@sh tools/test.sh ubsan

# The client specs on Lua 5.4 with ASan + UBSan (a sanitized lua5.4 host; the servers run unsanitized).
asan:
	@sh tools/test.sh asan

# libFuzzer on the JSON decoder and the response path, FUZZ_SECONDS each: make fuzz FUZZ_SECONDS=600
FUZZ_SECONDS ?= 30
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh tools/test.sh fuzz

# The JSON decoder against lua-cjson and Python's json.
differential:
	@sh tools/test.sh differential

valgrind:
	@sh tools/test.sh valgrind

# luarocks make leaves its build here (limitry/core.so, src/*.o), where Lua's default ./?.so path
# would find it from the checkout: removed once installed.
rock:
	luarocks --lua-version 5.4 make --deps-mode=none CURL_INCDIR=$(CURL_INCDIR)
	rm -rf limitry src/*.o

# limitry vs bare libcurl, Lua-cURL, luasocket and wrk in one markdown table (about 4 minutes;
# BENCH_QUICK=1 for a smoke run). profile: callgrind top functions into build/bench/profile.txt.
bench:
	@sh bench/bench.sh

profile:
	@sh bench/profile.sh

# The local server at 0, 100,000 and 1,000,000 stored events: ingest, track/check p50/p99, usage
# queries, memory and start-up, one markdown table (about 3 minutes; BENCH_SCALES="0 10000" smaller).
bench-server:
	@sh bench/server.sh

clean:
	rm -rf build .test-tmp limitry src/*.o
