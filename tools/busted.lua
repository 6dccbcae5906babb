-- `luarocks test --test-type command` runs this with the Lua LuaRocks was asked for: busted's own
-- runner, from wherever busted is installed. Debian's lua-busted is an apt package, not a rock, so
-- the rockspec's default `busted` type, which needs busted as a rock, cannot use it offline.
require("busted.runner")({ standalone = false })
