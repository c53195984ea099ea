-- snapshot.lua: read one breaker, lifting an expired force first. Runs after _lib.lua.
-- KEYS[1..4] and ARGV[1..2] as in _lib.lua; no further arguments.
-- returns nil when the breaker does not exist, else the snapshot reply (_lib.lua)

if not load() then return false end
lift_expired_force()
finish()
return snapshot_reply()
