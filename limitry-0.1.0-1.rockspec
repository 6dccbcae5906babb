rockspec_format = "3.0"
package = "limitry"
version = "0.1.0-1"
source = {
   url = "git+https://github.com/limitry/limitry-lua.git",
   tag = "v0.1.0",
}
description = {
   summary = "Lua client for Limitry's usage analytics API (C core on libcurl)",
   detailed = [[
      limitry.new(key):usage():get_summary{ start_date = ..., end_date = ... } returns plain Lua
      tables. A small C core (limitry.core) does HTTP with libcurl and decodes JSON with integers
      kept as integers; the Lua facade owns the API, argument checks and retries.
   ]],
   homepage = "https://github.com/limitry/limitry-lua",
   license = "MIT",
}
dependencies = {
   "lua >= 5.1, < 5.5",
}
external_dependencies = {
   CURL = { header = "curl/curl.h", library = "curl" },
}
build = {
   type = "builtin",
   modules = {
      ["limitry"] = "lua/limitry/init.lua",
      ["limitry.errors"] = "lua/limitry/errors.lua",
      ["limitry.protocol"] = "lua/limitry/protocol.lua",
      ["limitry.async"] = "lua/limitry/async.lua",
      ["limitry.ngx_thread"] = "lua/limitry/ngx_thread.lua",
      -- the command line (bin/limitry, docs/cli.md)
      ["limitry.cli"] = "lua/limitry/cli.lua",
      ["limitry.cli.chart"] = "lua/limitry/cli/chart.lua",
      ["limitry.cli.dates"] = "lua/limitry/cli/dates.lua",
      ["limitry.cli.format"] = "lua/limitry/cli/format.lua",
      ["limitry.cli.import"] = "lua/limitry/cli/import.lua",
      ["limitry.core"] = {
         sources = { "src/core.c", "src/request.c", "src/multi.c", "src/process.c", "src/json.c", "src/buffer.c", "src/encode.c" },
         libraries = { "curl", "pthread" },
         incdirs = { "$(CURL_INCDIR)" },
         libdirs = { "$(CURL_LIBDIR)" },
         defines = { "_POSIX_C_SOURCE=200809L" },
      },
   },
   install = {
      bin = { limitry = "bin/limitry" },   -- the command line (docs/cli.md)
   },
   -- server/ (the local Limitry-compatible server) ships in the rock's own folder, beside bin/, for
   -- `limitry local start`; docs/ holds docs/cli.md.
   copy_directories = { "server", "docs" },
}
test = {
   -- `luarocks test`: busted (installed as a rock on first use) with the settings in .busted.
   -- Offline, with Debian's lua-busted: `luarocks test --test-type command` runs `script` instead.
   type = "busted",
   script = "tools/busted.lua",
}
