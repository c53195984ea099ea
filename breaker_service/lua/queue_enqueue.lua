-- queue_enqueue.lua: add one job, creating the queue (stream and consumer group) on first use, unless the queue
-- already holds its maximum of jobs (live jobs and dead letters together). Runs after queue_lib.lua.
-- KEYS[1..5], ARGV[1] as in queue_lib.lua; KEYS[6] q:{name}:idem:<key>, only with an idempotency key
-- ARGV[2] payload (JSON bytes)   ARGV[3] max jobs   ARGV[4] idempotency TTL ms (only with a key)
-- returns {job id, 1 when the key was seen before (the id is then the first job's), else 0},
-- or {"", 2, jobs held} when the queue is full (nothing added)

local IDEM = KEYS[6]
if IDEM then
  local seen = redis.call('GET', IDEM)
  if seen then return {seen, 1} end
end
if redis.call('EXISTS', JOBS) == 0 then
  redis.call('XGROUP', 'CREATE', JOBS, GROUP, '0', 'MKSTREAM')
end
local held = redis.call('XLEN', JOBS) + redis.call('XLEN', DEAD)
if held >= tonumber(ARGV[3]) then return {'', 2, held} end
local id = redis.call('XADD', JOBS, '*', 'payload', ARGV[2])
if IDEM then redis.call('SET', IDEM, id, 'PX', ARGV[4]) end
return {id, 0}
