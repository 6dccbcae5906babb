# Developer entry points. The two that matter:
#   make demo   start the local server with sample data and print a usage report
#   make test   run every suite (Lua 5.4, 5.1, LuaJIT, the server, the rock install, valgrind)
# Both install missing Debian packages first when run as root (and print the apt line otherwise).

CURL_INCDIR ?= /usr/include/x86_64-linux-gnu
CC          ?= gcc
CFLAGS_DEV  := -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -g -fPIC -Wall -Wextra -Werror -pedantic
SOURCES     := src/core.c src/request.c src/multi.c src/json.c src/buffer.c
HEADERS     := $(wildcard src/*.h)

# lua version -> include dir
INC_5.4    := /usr/include/lua5.4
INC_5.3    := /usr/include/lua5.3
INC_5.1    := /usr/include/lua5.1
INC_luajit := /usr/include/luajit-2.1

.PHONY: deps build demo test test-quick asan valgrind rock clean server-start server-stop

deps:
	@sh tools/deps.sh

build/%/limitry/core.so: $(SOURCES) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_DEV) -I$(INC_$*) -I$(CURL_INCDIR) -shared -o $@ $(SOURCES) -lcurl

build: build/5.4/limitry/core.so build/5.1/limitry/core.so build/luajit/limitry/core.so

demo: deps build/5.4/limitry/core.so
	@sh tools/demo.sh

test: deps build/5.3/limitry/core.so build
	@sh tools/test.sh

# One Lua, no valgrind: LUA=5.4|5.3|5.1|luajit
test-quick: build/$(LUA)/limitry/core.so
	@sh tools/test.sh quick $(LUA)

build/asan/limitry/core.so: $(SOURCES) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_DEV) -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -I$(INC_5.4) -I$(CURL_INCDIR) -shared -o $@ $(SOURCES) -lcurl

valgrind: build/5.4/limitry/core.so
	@sh tools/test.sh valgrind

rock:
	luarocks --lua-version 5.4 make --deps-mode=none CURL_INCDIR=$(CURL_INCDIR)

clean:
	rm -rf build .test-tmp
