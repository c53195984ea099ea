-- _lib.lua: the prelude that breaker_service/store/scripts_redis.py puts in front of every operation script (Lua
-- has no `require`), so the state machine's shared parts exist once. client/breaker_client/protocol/machine.py
-- mirrors it rule for rule; docs/semantics.md describes both. Line numbers in script errors count this prelude too.
--
-- Inputs common to every operation script:
--   KEYS[1] brk:{name}:state    hash: state fields, counts, permit_seq, `config` (BreakerConfig JSON)
--   KEYS[2] brk:{name}:permits  sorted set: permit id scored by its expiry (ms)
--   KEYS[3] brk:{name}:window   hash: `<bucket>:c|f|s` rate-mode counters (calls, failures, slow)
--   KEYS[4] brk:{name}:history  stream: field `transition`, a Transition as JSON
--   ARGV[1] breaker name        ARGV[2] events channel
-- Operation-specific arguments start at ARGV[3].
--
-- The snapshot reply several scripts return (integers; times in ms):
--   {state, forced or "", generation, consecutive_failures, consecutive_successes,
--    opened_at_ms (0: never), retry_after_ms (-1: none), config JSON, success, failure, rejected}

local STATE_KEY, PERMITS_KEY, WINDOW_KEY, HISTORY_KEY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local NAME, CHANNEL = ARGV[1], ARGV[2]
local HISTORY_MAXLEN = 1000
local WINDOW_BUCKETS = 10
local NUMBER_FIELDS = {
  'forced_until_ms', 'generation', 'consecutive_failures', 'consecutive_successes', 'opened_at_ms',
  'open_until_ms', 'open_streak', 'success', 'failure', 'rejected', 'permit_seq', 'proven',
}

local NOW_MS
do
  local time = redis.call('TIME')
  NOW_MS = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- S is the breaker as the operation changes it; `saved` is what the hash holds, so save() writes only the
-- difference and a read-only path writes nothing. `forced` is "" when there is no override.
local S, saved, cfg = {}, {}, nil

local function decode_config(json)
  local config = cjson.decode(json)
  -- cjson turns JSON null into a sentinel that is truthy; the rules below test optional fields with `if`.
  for field, value in pairs(config) do
    if value == cjson.null then config[field] = nil end
  end
  return config
end

-- Reads the breaker into S; false when it does not exist.
local function load()
  local raw = redis.call('HGETALL', STATE_KEY)
  if #raw == 0 then return false end
  for i = 1, #raw, 2 do saved[raw[i]] = raw[i + 1] end
  -- A field a breaker written by an older version lacks reads as 0.
  for _, field in ipairs(NUMBER_FIELDS) do saved[field] = tonumber(saved[field]) or 0 end
  for field, value in pairs(saved) do S[field] = value end
  cfg = decode_config(S.config)
  return true
end

local function save()
  local changes = {}
  for field, value in pairs(S) do
    if saved[field] ~= value then
      changes[#changes + 1] = field
      changes[#changes + 1] = value
    end
  end
  if #changes > 0 then redis.call('HSET', STATE_KEY, unpack(changes)) end
end

local function effective()
  if S.forced ~= '' then return S.forced end
  return S.state
end

local function open_timeout_ms()
  local seconds = math.min(cfg.open_timeout_s * cfg.open_backoff ^ S.open_streak, cfg.max_open_timeout_s)
  return math.floor(seconds * 1000)
end

-- Appends one entry to the breaker's history and answers it as JSON.
local function append_history(from, to, reason, actor)
  local entry = cjson.encode({
    name = NAME, from = from, to = to, at = NOW_MS / 1000, reason = reason,
    actor = actor or cjson.null, generation = S.generation,
  })
  redis.call('XADD', HISTORY_KEY, 'MAXLEN', '~', HISTORY_MAXLEN, '*', 'transition', entry)
  return entry
end

-- The one choke point for every change of state: automatic moves pass the machine's new state `to`; admin
-- moves (force, reset, force expiry) pass `to` = CLOSED, a fresh machine, plus `forced`, the override to put
-- on top ("" lifts it). History and the event carry effective states, so a force may go from X to X.
local function transition(to, reason, actor, forced)
  local from = effective()
  S.consecutive_failures = 0
  S.consecutive_successes = 0
  S.open_until_ms = 0
  redis.call('DEL', PERMITS_KEY, WINDOW_KEY)
  S.state = to
  if to == 'OPEN' then
    S.opened_at_ms = NOW_MS
    S.open_until_ms = NOW_MS + open_timeout_ms()
  elseif to == 'CLOSED' then
    -- Automatic closes already zeroed the streak; admin moves want it zeroed too.
    S.opened_at_ms = 0
    S.open_streak = 0
    -- Probes proved the dependency works; an admin move starts a fresh, unproven machine.
    S.proven = forced and 0 or 1
  end
  if forced then
    S.forced = forced
    S.forced_until_ms = 0
  end
  S.generation = S.generation + 1
  local entry = append_history(from, effective(), reason, actor)
  redis.call('PUBLISH', CHANNEL, '{"kind":"state","data":' .. entry .. '}')
end

local function lift_expired_force()
  if S.forced ~= '' and S.forced_until_ms ~= 0 and NOW_MS >= S.forced_until_ms then
    transition('CLOSED', 'force expired', nil, '')
  end
end

local function drop_expired_permits()
  redis.call('ZREMRANGEBYSCORE', PERMITS_KEY, '-inf', NOW_MS)
end

local function live_permits()
  return redis.call('ZCARD', PERMITS_KEY)
end

-- When the first live permit expires; now when there is none (a denial then says "retry at once").
local function first_permit_expiry_ms()
  local first = redis.call('ZRANGE', PERMITS_KEY, 0, 0, 'WITHSCORES')
  if #first == 0 then return NOW_MS end
  return tonumber(first[2])
end

local function grant_permit()
  S.permit_seq = S.permit_seq + 1
  local permit = string.format('%d-%d', S.generation, S.permit_seq)
  redis.call('ZADD', PERMITS_KEY, NOW_MS + math.floor(cfg.permit_ttl_s * 1000), permit)
  return permit
end

local function snapshot_reply()
  local retry_after_ms = -1
  if S.forced == 'OPEN' then
    if S.forced_until_ms ~= 0 then retry_after_ms = math.max(0, S.forced_until_ms - NOW_MS) end
  elseif S.forced == '' and S.state == 'OPEN' then
    retry_after_ms = math.max(0, S.open_until_ms - NOW_MS)
  end
  return {
    S.state, S.forced, S.generation, S.consecutive_failures, S.consecutive_successes, S.opened_at_ms,
    retry_after_ms, S.config, S.success, S.failure, S.rejected,
  }
end
