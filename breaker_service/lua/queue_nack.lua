-- queue_nack.lua: give claimed jobs back, due after a delay, or bury those out of attempts. Runs after
-- queue_lib.lua.
-- KEYS[1..5], ARGV[1] as in queue_lib.lua
-- ARGV[2] delay ms   ARGV[3] error ("" for none)   ARGV[4] max_attempts   ARGV[5] "1": the failed delivery counts
-- as an attempt, "0": it does not   ARGV[6..] job ids
-- returns {requeued, dead}

local delay_ms, reason, max_attempts, counted = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
if reason == '' then reason = 'nacked' end
local requeued, dead = 0, 0
for i = 6, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', LEASES, id) == 1 then
    local attempts = tonumber(redis.call('HGET', ATTEMPTS, id)) or 0
    if not counted then
      redis.call('HSET', ATTEMPTS, id, math.max(0, attempts - 1))
    end
    if counted and attempts >= max_attempts then
      bury(id, attempts, reason)
      dead = dead + 1
    else
      redis.call('ZADD', RETRY, NOW_MS + delay_ms, id)
      requeued = requeued + 1
    end
  end
end
return {requeued, dead}
