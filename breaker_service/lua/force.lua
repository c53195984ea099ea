-- force.lua: pin the breaker OPEN or CLOSED over a fresh CLOSED machine. Runs after _lib.lua.
-- KEYS[1..4] and ARGV[1..2] as in _lib.lua
-- ARGV[3] "OPEN" or "CLOSED"   ARGV[4] reason   ARGV[5] ttl in ms (floor(ttl_s * 1000)) or "" for no expiry
-- ARGV[6] actor or ""
-- returns nil when the breaker does not exist, else the snapshot reply (_lib.lua)

local mode, reason, ttl_ms = ARGV[3], ARGV[4], tonumber(ARGV[5])
local actor = ARGV[6] ~= '' and ARGV[6] or nil

if not load() then return false end
lift_expired_force()
transition('CLOSED', reason, actor, mode)
if ttl_ms then S.forced_until_ms = NOW_MS + ttl_ms end
finish()
return snapshot_reply()
