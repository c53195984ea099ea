-- queue_stats.lua: the queue's counts, read at one instant. Runs after queue_lib.lua; writes nothing.
-- KEYS[1..5], ARGV[1] as in queue_lib.lua; no further arguments
-- returns {ready, pending, dead, delayed}, or {} when the queue does not exist

if redis.call('EXISTS', JOBS) == 0 then return {} end
local pending = redis.call('ZCARD', LEASES)
local delayed = redis.call('ZCOUNT', RETRY, '(' .. NOW_MS, '+inf')
return {redis.call('XLEN', JOBS) - pending, pending, redis.call('XLEN', DEAD), delayed}
