-- Append-only logs of JSON lines (DATA/config.jsonl: quotas, alerts, rate limits): every line is
-- written with one write(2) on an O_APPEND descriptor and fsync'd before the change is answered; on
-- open every whole line is replayed, and a torn last line (a crash mid-write) is skipped and fenced
-- off with a newline so the next line starts on its own.
local cjson = require "cjson.safe"
local ffi = require "ffi"

ffi.cdef [[
int open(const char *path, int flags, int mode);
long write(int fd, const void *buf, size_t n);
int fsync(int fd);
int close(int fd);
]]
local O_WRONLY, O_CREAT, O_APPEND = 1, 64, 1024

local M = {}

-- Replays every whole line of an append-only log of JSON lines through apply(decoded) (true: taken),
-- fences off a torn last line so the next write starts a line of its own, and opens the file for
-- appending. Returns the descriptor, the lines taken and the lines skipped.
local function open_lines(path, apply)
  local loaded, skipped = 0, 0
  local f = io.open(path, "rb")
  local needs_fence = false
  if f then
    local data = f:read("*a")
    f:close()
    needs_fence = #data > 0 and data:sub(-1) ~= "\n"
    for line in data:gmatch("[^\n]+") do
      local rec = cjson.decode(line)
      if type(rec) == "table" and apply(rec) then loaded = loaded + 1 else skipped = skipped + 1 end
    end
  end
  local file = ffi.C.open(path, O_WRONLY + O_CREAT + O_APPEND, 420)
  if file < 0 then error("cannot open " .. path .. ": " .. ffi.errno()) end
  if needs_fence then ffi.C.write(file, "\n", 1) end
  return file, loaded, skipped
end

-- Writes blob whole to fd and fsyncs it: true, or nil and a message.
local function write_synced(file, blob)
  local off = 0
  while off < #blob do
    local n = ffi.C.write(file, ffi.cast("const char *", blob) + off, #blob - off)
    if n < 0 then return nil, "write failed: errno " .. ffi.errno() end
    off = off + tonumber(n)
  end
  if ffi.C.fsync(file) ~= 0 then return nil, "fsync failed: errno " .. ffi.errno() end
  return true
end

-- Opens the log at path (creating it): replays every whole line
-- through apply(decoded) and returns a function appending one line durably (true or nil, msg).
function M.open(path, apply)
  local log, loaded, skipped = open_lines(path, apply)
  return function(line) return write_synced(log, line .. "\n") end, loaded, skipped
end

return M
