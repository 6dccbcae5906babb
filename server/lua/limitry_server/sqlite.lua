-- A small binding of Debian's libsqlite3 through LuaJIT's FFI, for the event store: open, run,
-- prepared statements (cached by their SQL text), transactions. Every failure raises an error
-- naming SQLite's message. Only what the store needs; one connection per nginx worker.
local ffi = require "ffi"

ffi.cdef [[
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
int sqlite3_open_v2(const char *filename, sqlite3 **db, int flags, const char *vfs);
int sqlite3_close_v2(sqlite3 *db);
int sqlite3_exec(sqlite3 *db, const char *sql, void *callback, void *arg, char **errmsg);
const char *sqlite3_errmsg(sqlite3 *db);
int sqlite3_extended_result_codes(sqlite3 *db, int onoff);
int sqlite3_busy_timeout(sqlite3 *db, int ms);
int sqlite3_prepare_v2(sqlite3 *db, const char *sql, int nbyte, sqlite3_stmt **stmt, const char **tail);
int sqlite3_bind_double(sqlite3_stmt *stmt, int i, double v);
int sqlite3_bind_int64(sqlite3_stmt *stmt, int i, int64_t v);
int sqlite3_bind_null(sqlite3_stmt *stmt, int i);
int sqlite3_bind_text(sqlite3_stmt *stmt, int i, const char *v, int n, void (*destructor)(void *));
int sqlite3_step(sqlite3_stmt *stmt);
int sqlite3_reset(sqlite3_stmt *stmt);
int sqlite3_clear_bindings(sqlite3_stmt *stmt);
int sqlite3_finalize(sqlite3_stmt *stmt);
int sqlite3_column_count(sqlite3_stmt *stmt);
int sqlite3_column_type(sqlite3_stmt *stmt, int i);
double sqlite3_column_double(sqlite3_stmt *stmt, int i);
int64_t sqlite3_column_int64(sqlite3_stmt *stmt, int i);
const unsigned char *sqlite3_column_text(sqlite3_stmt *stmt, int i);
int sqlite3_column_bytes(sqlite3_stmt *stmt, int i);
int sqlite3_get_autocommit(sqlite3 *db);
int sqlite3_changes(sqlite3 *db);
int sqlite3_config(int op, ...);
]]

local function load_library()
  for _, name in ipairs { "sqlite3", "libsqlite3.so.0" } do
    local ok, lib = pcall(ffi.load, name)
    if ok then return lib end
  end
  error("limitry-local: cannot load libsqlite3 (Debian: apt-get install libsqlite3-0)")
end
local C = load_library()
-- No memory statistics: they take a mutex at every allocation (SQLITE_CONFIG_MEMSTATUS, before
-- the library initializes: it fails harmlessly, SQLITE_MISUSE, if another module opened a
-- database first).
C.sqlite3_config(9, ffi.new("int", 0))

local SQLITE_OK, SQLITE_ROW, SQLITE_DONE = 0, 100, 101
local SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_NULL = 1, 2, 3, 5
local OPEN_READWRITE, OPEN_CREATE, OPEN_NOMUTEX = 0x2, 0x4, 0x8000
local TRANSIENT = ffi.cast("void (*)(void *)", -1)

local tonumber, type, ffi_string = tonumber, type, ffi.string

local M = {}
local Db = {}
Db.__index = Db
local Stmt = {}
Stmt.__index = Stmt

-- Opens (creating) the database file at path.
function M.open(path)
  local out = ffi.new("sqlite3 *[1]")
  local rc = C.sqlite3_open_v2(path, out, OPEN_READWRITE + OPEN_CREATE + OPEN_NOMUTEX, nil)
  local db = out[0]
  if rc ~= SQLITE_OK then
    local msg = db ~= nil and ffi_string(C.sqlite3_errmsg(db)) or ("error " .. rc)
    if db ~= nil then C.sqlite3_close_v2(db) end
    error("cannot open " .. path .. ": " .. msg, 2)
  end
  C.sqlite3_extended_result_codes(db, 1)
  -- Another connection holding the write lock (an old worker finishing during a reload) is waited
  -- for, not failed on.
  C.sqlite3_busy_timeout(db, 5000)
  return setmetatable({ db = db, path = path, stmts = {} }, Db)
end

function Db:errmsg() return ffi_string(C.sqlite3_errmsg(self.db)) end

-- Runs one or more statements that return no rows.
function Db:exec(sql)
  local rc = C.sqlite3_exec(self.db, sql, nil, nil, nil)
  if rc ~= SQLITE_OK then error("sqlite: " .. self:errmsg() .. " (" .. rc .. ") in: " .. sql:sub(1, 200), 2) end
end

-- The prepared statement for sql, made once and kept.
function Db:prepare(sql)
  local st = self.stmts[sql]
  if st then return st end
  local out = ffi.new("sqlite3_stmt *[1]")
  local rc = C.sqlite3_prepare_v2(self.db, sql, #sql, out, nil)
  if rc ~= SQLITE_OK then error("sqlite: " .. self:errmsg() .. " in: " .. sql:sub(1, 200), 2) end
  st = setmetatable({ stmt = out[0], db = self, sql = sql }, Stmt)
  self.stmts[sql] = st
  return st
end

function Db:changes() return C.sqlite3_changes(self.db) end

function Db:in_transaction() return C.sqlite3_get_autocommit(self.db) == 0 end

function Db:close()
  for _, st in pairs(self.stmts) do C.sqlite3_finalize(st.stmt) end
  self.stmts = {}
  if self.db ~= nil then C.sqlite3_close_v2(self.db) end
  self.db = nil
end

-- Binds value v (number, string, nil/false for NULL) to parameter i.
local function bind(stmt, i, v)
  local t = type(v)
  local rc
  if t == "number" then
    rc = C.sqlite3_bind_double(stmt, i, v)
  elseif t == "string" then
    rc = C.sqlite3_bind_text(stmt, i, v, #v, TRANSIENT)
  elseif v == nil or v == false then
    rc = C.sqlite3_bind_null(stmt, i)
  else
    error("sqlite: cannot bind a " .. t)
  end
  if rc ~= SQLITE_OK then error("sqlite: bind " .. i .. ": " .. rc) end
end
M.bind = bind

-- Binds an integer exactly (rowids, counts).
function Stmt:bind_int(i, v)
  local rc = C.sqlite3_bind_int64(self.stmt, i, v)
  if rc ~= SQLITE_OK then error("sqlite: bind " .. i .. ": " .. rc) end
end

function Stmt:bind(i, v) bind(self.stmt, i, v) end

-- Binds the bytes of a string.buffer as text (copied by SQLite: the buffer may be reused at once).
local const_char = ffi.typeof("const char *")
function Stmt:bind_buffer(i, buf)
  local p, n = buf:ref()
  local rc = C.sqlite3_bind_text(self.stmt, i, ffi.cast(const_char, p), n, TRANSIENT)
  if rc ~= SQLITE_OK then error("sqlite: bind " .. i .. ": " .. rc) end
end

-- Binds the list of parameters (n of them: nil values are NULLs).
function Stmt:bind_all(params, n)
  local stmt = self.stmt
  C.sqlite3_reset(stmt)
  for i = 1, n or #params do bind(stmt, i, params[i]) end
end

-- Steps once: true when a row is there, false when done; raises on errors (and resets).
function Stmt:step()
  local rc = C.sqlite3_step(self.stmt)
  if rc == SQLITE_ROW then return true end
  if rc == SQLITE_DONE then return false end
  C.sqlite3_reset(self.stmt)
  error("sqlite: " .. self.db:errmsg() .. " (" .. rc .. ") in: " .. self.sql:sub(1, 200), 2)
end

function Stmt:reset() C.sqlite3_reset(self.stmt) end

-- Column i (0-based) of the current row: a number, a string or nil.
function Stmt:col(i)
  local stmt = self.stmt
  local t = C.sqlite3_column_type(stmt, i)
  if t == SQLITE_FLOAT then return C.sqlite3_column_double(stmt, i) end
  if t == SQLITE_INTEGER then return tonumber(C.sqlite3_column_int64(stmt, i)) end
  if t == SQLITE_TEXT then return ffi_string(C.sqlite3_column_text(stmt, i), C.sqlite3_column_bytes(stmt, i)) end
  if t == SQLITE_NULL then return nil end
  return ffi_string(C.sqlite3_column_text(stmt, i), C.sqlite3_column_bytes(stmt, i))
end

function Stmt:double(i) return C.sqlite3_column_double(self.stmt, i) end
function Stmt:int(i) return tonumber(C.sqlite3_column_int64(self.stmt, i)) end
function Stmt:text(i)
  local stmt = self.stmt
  local p = C.sqlite3_column_text(stmt, i)
  if p == nil then return nil end
  return ffi_string(p, C.sqlite3_column_bytes(stmt, i))
end

-- Runs a statement that returns no rows, with its parameters.
function Db:run(sql, ...)
  local st = self:prepare(sql)
  local n = select("#", ...)
  st:bind_all({ ... }, n)
  st:step()
  st:reset()
end

-- The first row of a query as a list of values (or nil), with its parameters.
function Db:row(sql, ...)
  local st = self:prepare(sql)
  st:bind_all({ ... }, select("#", ...))
  local out
  if st:step() then
    out = {}
    for i = 1, C.sqlite3_column_count(st.stmt) do out[i] = st:col(i - 1) end
  end
  st:reset()
  return out
end

return M
