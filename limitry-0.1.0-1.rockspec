rockspec_format = "3.0"
package = "limitry"
version = "0.1.0-1"
source = {
   url = "git+https://github.com/limitry/limitry-lua.git",
   tag = "v0.1.0",
}
description = {
   summary = "Lua client for Limitry: usage analytics, events, limits, OpenResty gateway",
   detailed = [[
      The Lua client for Limitry's whole API: usage analytics (limitry.new(key):usage():get_summary{...}
      returns plain Lua tables), recording events, track, quota and rate-limit checks and their CRUD,
      customers and the project, with blocking, async (libcurl multi) and OpenResty cosocket
      transports; limitry.recorder delivers events in batches in the background, and
      limitry.gateway enforces limits in front of model APIs in nginx. A small C core (limitry.core)
      does HTTP with libcurl and encodes and decodes JSON with integers kept as integers; the Lua
      facade owns the API, argument checks and retries. LuaLS type stubs are installed in the rock's
      meta/ folder (luarocks show --rock-dir limitry).
   ]],
   homepage = "https://github.com/limitry/limitry-lua",
   license = "MIT",
}
dependencies = {
   "lua >= 5.1, < 5.5",
   "argparse >= 0.6", -- bin/limitry's grammar (the library itself needs none)
}
external_dependencies = {
   CURL = { header = "curl/curl.h", library = "curl" },
}
build = {
   type = "builtin",
   -- Every file under lua/ (tools/rock-check.sh and spec/install_spec.lua check that none is missing).
   modules = {
      ["limitry"] = "lua/limitry/init.lua",
      ["limitry.answers"] = "lua/limitry/answers.lua",
      ["limitry.arguments"] = "lua/limitry/arguments.lua",
      ["limitry.async"] = "lua/limitry/async.lua",
      ["limitry.call"] = "lua/limitry/call.lua",
      ["limitry.dates"] = "lua/limitry/dates.lua",
      ["limitry.errors"] = "lua/limitry/errors.lua",
      ["limitry.gateway"] = "lua/limitry/gateway.lua",
      ["limitry.gateway.decisions"] = "lua/limitry/gateway/decisions.lua",
      ["limitry.gateway.event"] = "lua/limitry/gateway/event.lua",
      ["limitry.gateway.metrics"] = "lua/limitry/gateway/metrics.lua",
      ["limitry.gateway.periods"] = "lua/limitry/gateway/periods.lua",
      ["limitry.gateway.request_body"] = "lua/limitry/gateway/request_body.lua",
      ["limitry.gateway.rules"] = "lua/limitry/gateway/rules.lua",
      ["limitry.gateway.usage"] = "lua/limitry/gateway/usage.lua",
      ["limitry.methods"] = "lua/limitry/methods.lua",
      ["limitry.options"] = "lua/limitry/options.lua",
      ["limitry.recorder"] = "lua/limitry/recorder.lua",
      ["limitry.recorder.codec"] = "lua/limitry/recorder/codec.lua",
      ["limitry.recorder.counters"] = "lua/limitry/recorder/counters.lua",
      ["limitry.recorder.memory_queue"] = "lua/limitry/recorder/memory_queue.lua",
      ["limitry.recorder.options"] = "lua/limitry/recorder/options.lua",
      ["limitry.recorder.settle"] = "lua/limitry/recorder/settle.lua",
      ["limitry.recorder.shorthand"] = "lua/limitry/recorder/shorthand.lua",
      ["limitry.recorder.shdict_queue"] = "lua/limitry/recorder/shdict_queue.lua",
      ["limitry.resources"] = "lua/limitry/resources.lua",
      ["limitry.transport"] = "lua/limitry/transport/init.lua",
      ["limitry.transport.cosocket"] = "lua/limitry/transport/cosocket.lua",
      ["limitry.transport.cosocket_reader"] = "lua/limitry/transport/cosocket_reader.lua",
      ["limitry.transport.curl"] = "lua/limitry/transport/curl.lua",
      ["limitry.transport.multi"] = "lua/limitry/transport/multi.lua",
      ["limitry.transport.worker_thread"] = "lua/limitry/transport/worker_thread.lua",
      -- the command line (bin/limitry, docs/cli.md)
      ["limitry.cli"] = "lua/limitry/cli.lua",
      ["limitry.cli.api"] = "lua/limitry/cli/api.lua",
      ["limitry.cli.chart"] = "lua/limitry/cli/chart.lua",
      ["limitry.cli.common"] = "lua/limitry/cli/common.lua",
      ["limitry.cli.dates"] = "lua/limitry/cli/dates.lua",
      ["limitry.cli.events"] = "lua/limitry/cli/events.lua",
      ["limitry.cli.format"] = "lua/limitry/cli/format.lua",
      ["limitry.cli.import"] = "lua/limitry/cli/import.lua",
      ["limitry.cli.input"] = "lua/limitry/cli/input.lua",
      ["limitry.cli.limits"] = "lua/limitry/cli/limits.lua",
      ["limitry.cli.parser"] = "lua/limitry/cli/parser.lua",
      ["limitry.cli.server"] = "lua/limitry/cli/server.lua",
      ["limitry.cli.usage"] = "lua/limitry/cli/usage.lua",
      ["limitry.core"] = {
         sources = { "src/core.c", "src/class.c", "src/handle.c", "src/transfer.c", "src/multi.c", "src/process.c", "src/json.c",
            "src/buffer.c", "src/encode.c", "src/text.c", "src/random.c" },
         libraries = { "curl", "pthread" },
         incdirs = { "$(CURL_INCDIR)" },
         libdirs = { "$(CURL_LIBDIR)" },
         defines = { "_POSIX_C_SOURCE=200809L" },
      },
   },
   install = {
      bin = { limitry = "bin/limitry" },   -- the command line (docs/cli.md)
   },
   -- Into the rock's own folder ($(luarocks show --rock-dir limitry)): meta/ (the LuaLS type stubs),
   -- server/ (the local Limitry-compatible server, for `limitry local start`) and docs/.
   copy_directories = { "meta", "server", "docs" },
}
test = {
   -- `luarocks test`: busted (installed as a rock on first use) with the settings in .busted.
   -- Offline, with Debian's lua-busted: `luarocks test --test-type command` runs `script` instead.
   type = "busted",
   script = "tools/busted.lua",
}
