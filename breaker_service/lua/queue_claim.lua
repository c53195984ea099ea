-- queue_claim.lua: take back expired leases, then hand the consumer the jobs it still holds, then lease jobs due
-- for a retry, then new jobs. Runs after queue_lib.lua.
-- KEYS[1..5], ARGV[1] as in queue_lib.lua
-- ARGV[2] consumer   ARGV[3] max jobs   ARGV[4] lease ms   ARGV[5] max_attempts   ARGV[6] sweep limit
-- ARGV[7] max payload bytes: the payloads handed out add up to at most this, except that the first job is always
-- handed out (so a queue never sticks; payloads were accepted within the body limit, which this is)
-- returns {id, payload, attempts, id, payload, attempts, ...}; empty when the queue does not exist

if redis.call('EXISTS', JOBS) == 0 then return {} end
local consumer, max_jobs, lease_ms = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local max_attempts, sweep_limit, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

-- A lease that ran out is a failed attempt: the job is due again at once, or dead if it was its last.
local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW_MS, 'WITHSCORES', 'LIMIT', 0, sweep_limit)
for i = 1, #expired, 2 do
  local id, until_ms = expired[i], expired[i + 1]
  redis.call('ZREM', LEASES, id)
  local attempts = tonumber(redis.call('HGET', ATTEMPTS, id)) or 0
  if attempts >= max_attempts then
    bury(id, attempts, 'lease expired')
  else
    redis.call('ZADD', RETRY, until_ms, id)
  end
end

local claimed, count, bytes = {}, 0, 0
-- Whether one more payload of `size` bytes fits in the answer.
local function fits(size)
  return count == 0 or bytes + size <= max_bytes
end
local function lease(id, fields)
  local attempts = redis.call('HINCRBY', ATTEMPTS, id, 1)
  redis.call('ZADD', LEASES, NOW_MS + lease_ms, id)
  claimed[#claimed + 1] = id
  local payload = field(fields, 'payload')
  claimed[#claimed + 1] = payload
  claimed[#claimed + 1] = attempts
  count = count + 1
  bytes = bytes + #payload
end

-- The jobs this consumer still holds under a live lease come first, lease renewed, same attempt: a consumer whose
-- claim answer was lost (a timeout, a 503) gets them back instead of leaving them leased to nobody.
for _, pending in ipairs(redis.call('XPENDING', JOBS, GROUP, '-', '+', max_jobs, consumer)) do
  local id = pending[1]
  local entry = redis.call('ZSCORE', LEASES, id) and redis.call('XRANGE', JOBS, id, id)[1]
  if entry then
    local payload = field(entry[2], 'payload')
    if not fits(#payload) then break end
    redis.call('ZADD', LEASES, NOW_MS + lease_ms, id)
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = payload
    claimed[#claimed + 1] = tonumber(redis.call('HGET', ATTEMPTS, id)) or 0
    count = count + 1
    bytes = bytes + #payload
  end
end

local due = {}
if count < max_jobs then
  due = redis.call('ZRANGEBYSCORE', RETRY, '-inf', NOW_MS, 'LIMIT', 0, max_jobs - count)
end
for _, id in ipairs(due) do
  local peeked = redis.call('XRANGE', JOBS, id, id)[1]
  if peeked and not fits(#field(peeked[2], 'payload')) then break end
  redis.call('ZREM', RETRY, id)
  -- XCLAIM moves the pending entry to this consumer, so XPENDING shows who holds it.
  local entry = redis.call('XCLAIM', JOBS, GROUP, consumer, 0, id)[1]
  if entry then lease(id, entry[2]) else redis.call('HDEL', ATTEMPTS, id) end
end

if count < max_jobs then
  -- Peek at the next new jobs first: XREADGROUP delivers whatever it reads, so read only those that fit.
  local last_id = '0-0'
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', JOBS)) do
    if field(group, 'name') == GROUP then last_id = field(group, 'last-delivered-id') end
  end
  local wanted, planned = 0, bytes
  for _, entry in ipairs(redis.call('XRANGE', JOBS, '(' .. last_id, '+', 'COUNT', max_jobs - count)) do
    local size = #field(entry[2], 'payload')
    if count + wanted > 0 and planned + size > max_bytes then break end
    wanted, planned = wanted + 1, planned + size
  end
  if wanted > 0 then
    local read = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', wanted, 'STREAMS', JOBS, '>')
    if read then
      for _, entry in ipairs(read[1][2]) do lease(entry[1], entry[2]) end
    end
  end
end
return claimed
