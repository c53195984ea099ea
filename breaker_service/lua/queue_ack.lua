-- queue_ack.lua: finish delivered jobs (claimed, or given back and waiting). Runs after queue_lib.lua.
-- KEYS[1..5], ARGV[1] as in queue_lib.lua; ARGV[2..] job ids
-- returns how many of the ids were delivered jobs still in the queue

if redis.call('EXISTS', JOBS) == 0 then return 0 end
local acked = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  -- Only a delivered job is in the group's pending list: a new one is not finished by its id alone.
  if redis.call('XACK', JOBS, GROUP, id) == 1 then
    remove(id)
    acked = acked + 1
  end
end
return acked
