-- queue_purge.lua: drop every dead letter of the queue. Runs after queue_lib.lua.
-- KEYS[1..5], ARGV[1] as in queue_lib.lua; no further arguments
-- returns how many dead letters were dropped, or -1 when the queue does not exist

if redis.call('EXISTS', JOBS) == 0 and redis.call('EXISTS', DEAD) == 0 then return -1 end
local dropped = redis.call('XLEN', DEAD)
redis.call('DEL', DEAD)
return dropped
