-- Idempotency keys -> the seq of the event stored with each, in memory: an open-addressing hash
-- table (linear probing) in FFI memory, 8 bytes a slot (a 32-bit hash of the key and the event's
-- seq), at most 70% full: 16 MiB for a million keys. A lookup answers the seqs whose hash matches;
-- the store reads those events and compares the keys themselves, so a hash collision (about one in
-- 4,000 new keys at a million stored) costs a read, never a wrong answer.
--
-- Why not a unique index in the database: the client gives every event a random 128-bit key, and
-- random keys inserted into a B-tree dirty one page each. A 1,000-event batch rewrote ~1,000 pages
-- (4 MiB) into the WAL and fsync'd them: commits of 25 ms at a million events, and growing. Here a
-- batch writes its keys' hashes in its event rows (an index in seq order: appended pages), and the
-- table is rebuilt from that index at start-up (about 0.3 s for a million keys).
local ffi = require "ffi"
local bit = require "bit"

ffi.cdef [[ typedef struct { uint32_t h; uint32_t seq; } limitry_key_slot; ]]

local band, tobit = bit.band, bit.tobit
local M = {}

local slots, cap, mask, used = nil, 0, 0, 0
local MAX_LOAD = 0.7
M.MAX_SEQ = 2 ^ 32 - 1

local function alloc(n)
  slots = ffi.new("limitry_key_slot[?]", n) -- zero-filled: seq 0 marks an empty slot
  cap, mask, used = n, n - 1, 0
end

-- A key's 32-bit hash (the first 4 bytes of its MD5), as an unsigned number. Inside nginx, the MD5
-- is written into a buffer by the function ngx.md5_bin calls (lua-resty-core declares it), so no
-- 16-byte string is made per key; elsewhere ngx.md5_bin itself.
local u32 = ffi.typeof("const uint32_t *")
local md5_into
do
  local ok, f = pcall(function() return ffi.C.ngx_http_lua_ffi_md5_bin end)
  if ok then md5_into = f end
end
local digest = ffi.new("unsigned char[16]")
local digest32 = ffi.cast(u32, digest)
function M.hash(key)
  if md5_into then
    md5_into(key, #key, digest)
    return tonumber(digest32[0])
  end
  return tonumber(ffi.cast(u32, ngx.md5_bin(key))[0])
end

local function put(h, seq)
  local i = band(tobit(h), mask)
  while slots[i].seq ~= 0 do i = band(i + 1, mask) end
  slots[i].h = h
  slots[i].seq = seq
  used = used + 1
end

-- Records that the key of hash h belongs to event seq (1 to 2^32 - 1).
function M.add(h, seq)
  if used + 1 > cap * MAX_LOAD then
    local old, old_cap = slots, cap
    alloc(cap * 2)
    for i = 0, old_cap - 1 do
      local s = old[i]
      if s.seq ~= 0 then put(s.h, s.seq) end
    end
  end
  put(h, seq)
end

-- The seqs recorded for hash h (nil when none): candidates, to be checked against the stored keys.
function M.find(h)
  local out
  local i = band(tobit(h), mask)
  while true do
    local s = slots[i]
    local seq = s.seq
    if seq == 0 then return out end
    if s.h == h then
      out = out or {}
      out[#out + 1] = seq
    end
    i = band(i + 1, mask)
  end
end

function M.count() return used end
function M.bytes() return cap * ffi.sizeof("limitry_key_slot") end

-- Empties the table, sized for n keys.
function M.reset(n)
  local size = 1024
  while size * MAX_LOAD < (n or 0) * 1.25 do size = size * 2 end
  alloc(size)
end

return M
