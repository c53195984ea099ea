-- degradation.lua: settle the fleet's degradation mode, or force or lift the admin override and then settle, in
-- one step; publishes a `mode` event when the mode object changes (rules: breaker_service/degradation.py).
-- Runs alone (no _lib.lua prelude). Every key carries the hash tag {_mode}, which no breaker name can take.
--
-- KEYS[1] brk:{_mode}:current  hash: mode, reason, since_ms, forced ("1"/"0"): the mode last settled
-- KEYS[2] brk:{_mode}:forced   hash: mode, reason, until_ms (0: no end); expires at until_ms by itself
-- KEYS[3] brk:{_mode}:change   hash: the last admin change: mode ("" lifted), reason, actor, at_ms, ttl_ms
-- ARGV[1] events channel   ARGV[2] derived mode   ARGV[3] derived reason   ARGV[4] "settle", "force" or "lift"
-- force and lift: ARGV[5] mode ("" to lift)   ARGV[6] reason   ARGV[7] actor or ""   ARGV[8] ttl in ms or ""
-- returns {mode, reason, since_ms, forced (1/0), forced until_ms (0: none)}

local CURRENT, FORCED, CHANGE = KEYS[1], KEYS[2], KEYS[3]
local channel, derived, derived_reason, op = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local now_ms
do
  local time = redis.call('TIME')
  now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

if op == 'force' or op == 'lift' then
  local mode, reason, actor, ttl_ms = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
  redis.call('HSET', CHANGE, 'mode', mode, 'reason', reason, 'actor', actor, 'at_ms', now_ms, 'ttl_ms', ARGV[8])
  redis.call('DEL', FORCED)
  if mode ~= '' then
    local until_ms = ttl_ms and now_ms + ttl_ms or 0
    redis.call('HSET', FORCED, 'mode', mode, 'reason', reason, 'until_ms', until_ms)
    if ttl_ms then redis.call('PEXPIREAT', FORCED, until_ms) end
  end
end

-- An override past its end is already gone: Redis expires a key before any command reads it.
local mode, reason, forced, until_ms = derived, derived_reason, '0', 0
local override = redis.call('HMGET', FORCED, 'mode', 'reason', 'until_ms')
if override[1] then
  mode, reason, forced, until_ms = override[1], override[2], '1', tonumber(override[3])
end

local current = redis.call('HMGET', CURRENT, 'mode', 'reason', 'since_ms', 'forced')
local since_ms = tonumber(current[3]) or now_ms
if current[1] ~= mode or current[4] ~= forced then
  since_ms = now_ms
end
if current[1] ~= mode or current[2] ~= reason or current[4] ~= forced then
  redis.call('HSET', CURRENT, 'mode', mode, 'reason', reason, 'since_ms', since_ms, 'forced', forced)
  local data = {mode = mode, reason = reason, since = since_ms / 1000, forced = forced == '1'}
  redis.call('PUBLISH', channel, cjson.encode({kind = 'mode', data = data}))
end
return {mode, reason, since_ms, tonumber(forced), until_ms}
