-- reset.lua: back to a fresh CLOSED, force lifted, counts zeroed. Runs after _lib.lua.
-- Like the Python machine, it does not lift an expired force first: history goes from the force it clears.
-- KEYS[1..4] and ARGV[1..2] as in _lib.lua
-- ARGV[3] reason   ARGV[4] actor or ""
-- returns nil when the breaker does not exist, else the snapshot reply (_lib.lua)

local reason = ARGV[3]
local actor = ARGV[4] ~= '' and ARGV[4] or nil

if not load() then return false end
S.success, S.failure, S.rejected = 0, 0, 0
transition('CLOSED', reason, actor, '')
finish()
return snapshot_reply()
