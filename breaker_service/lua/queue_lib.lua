-- queue_lib.lua: the prelude breaker_service/store/queue_redis.py puts in front of every queue_*.lua operation
-- (Lua has no `require`). The rules are in breaker_service/store/queue_base.py; queue_memory.py mirrors them.
--
-- Inputs common to every queue script; every key carries the queue's hash tag, so a script touches one slot:
--   KEYS[1] q:{name}:jobs      stream: one entry per job (field `payload`, the JSON as enqueued); the entry id
--                              is the job id; consumer group ARGV[1] delivers it
--   KEYS[2] q:{name}:leases    sorted set: claimed job id scored by its lease expiry (ms)
--   KEYS[3] q:{name}:retry     sorted set: job id given back (nack, expired lease) scored by when it is due (ms)
--   KEYS[4] q:{name}:attempts  hash: job id -> deliveries so far
--   KEYS[5] q:{name}:dead      stream: dead letters, fields id, payload, attempts, error
--   ARGV[1] consumer group name
-- Operation-specific arguments start at ARGV[2].
--
-- Every job in the stream is exactly one of: new (after the group's last delivered id), leased (in the group's
-- pending list and in `leases`), or given back (pending and in `retry`). So ready = XLEN - ZCARD leases.

local JOBS, LEASES, RETRY, ATTEMPTS, DEAD = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local GROUP = ARGV[1]

local NOW_MS
do
  local time = redis.call('TIME')
  NOW_MS = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- The value of `name` in a stream entry's flat field list.
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- Drops a delivered job from every structure of the queue.
local function remove(id)
  redis.call('XACK', JOBS, GROUP, id)
  redis.call('XDEL', JOBS, id)
  redis.call('ZREM', LEASES, id)
  redis.call('ZREM', RETRY, id)
  redis.call('HDEL', ATTEMPTS, id)
end

-- Moves a delivered job to the dead letters, with the error that ended its last attempt.
local function bury(id, attempts, reason)
  local entry = redis.call('XRANGE', JOBS, id, id)[1]
  if entry then
    local payload = field(entry[2], 'payload')
    redis.call('XADD', DEAD, '*', 'id', id, 'payload', payload, 'attempts', attempts, 'error', reason)
  end
  remove(id)
end
