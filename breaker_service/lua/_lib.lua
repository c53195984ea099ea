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
--   {machine state, forced or "", generation, consecutive_failures, consecutive_successes,
--    opened_at_ms (0: never), retry_after_ms (-1: none), config JSON, success, failure, rejected,
--    forced_until_ms (0: none), forced actor or "", forced reason or "",
--    incarnation (random per creation; "" for a breaker made before incarnations), made}
-- `made` lists the transitions this run of the script made, as "FROM>TO" joined by "," ("" for none): the
-- replica that ran it counts them in its metrics, so a sum over replicas counts each transition once.
--
-- State flows one way: a script that made a transition publishes, after its `state` events, one `breaker` event
-- with the snapshot it leaves behind (finish()), so no replica or client has to read it back.

local STATE_KEY, PERMITS_KEY, WINDOW_KEY, HISTORY_KEY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local NAME, CHANNEL = ARGV[1], ARGV[2]
local HISTORY_MAXLEN = 1000
local WINDOW_BUCKETS = 10
local NUMBER_FIELDS = {
  'forced_until_ms', 'generation', 'consecutive_failures', 'consecutive_successes', 'opened_at_ms',
  'open_until_ms', 'open_streak', 'success', 'failure', 'rejected', 'permit_seq', 'proven', 'half_open_used',
}
local STRING_FIELDS = {'forced', 'forced_actor', 'forced_reason'}

local NOW_MS
do
  local time = redis.call('TIME')
  NOW_MS = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- S is the breaker as the operation changes it; `saved` is what the hash holds, so save() writes only the
-- difference and a read-only path writes nothing. `forced` is "" when there is no override.
local S, saved, cfg = {}, {}, nil
-- Set by transition(): finish() then publishes the snapshot the script leaves behind.
local TRANSITIONED = false
-- The transitions this run made ("FROM>TO"), for the reply's `made`.
local MADE = {}
-- Set when the stored config had to be corrected on reading (decode_config).
local CONFIG_CORRECTED = false

local function decode_config(json)
  local config = cjson.decode(json)
  -- cjson turns JSON null into a sentinel that is truthy; the rules below test optional fields with `if`.
  for field, value in pairs(config) do
    if value == cjson.null then config[field] = nil end
  end
  -- A config stored before v1.1 may ask for more probe successes than probes are granted: it could never close.
  -- The service reads it with success_threshold = half_open_max_calls (and warns); so does the machine.
  if config.success_threshold > config.half_open_max_calls then
    config.success_threshold = config.half_open_max_calls
    CONFIG_CORRECTED = true
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
  for _, field in ipairs(STRING_FIELDS) do saved[field] = saved[field] or '' end
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
  TRANSITIONED = true
  S.consecutive_failures = 0
  S.consecutive_successes = 0
  S.half_open_used = 0
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
    S.forced_actor = forced ~= '' and (actor or '') or ''
    S.forced_reason = forced ~= '' and reason or ''
  end
  S.generation = S.generation + 1
  MADE[#MADE + 1] = from .. '>' .. effective()
  local entry = append_history(from, effective(), reason, actor)
  redis.call('PUBLISH', CHANNEL, '{"kind":"state","data":' .. entry .. '}')
end

local function lift_expired_force()
  if S.forced ~= '' and S.forced_until_ms ~= 0 and NOW_MS >= S.forced_until_ms then
    transition('CLOSED', 'force expired', nil, '')
  end
end

-- A probe permit that expires unreported gives its slot back; one reported keeps it (half_open_used).
local function drop_expired_permits()
  local dropped = redis.call('ZREMRANGEBYSCORE', PERMITS_KEY, '-inf', NOW_MS)
  if S.state == 'HALF_OPEN' then S.half_open_used = math.max(0, S.half_open_used - dropped) end
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

-- `permit` is made by the replica (>= 64 random bits from `secrets`): never guessable, never from math.random.
local function grant_permit(permit)
  S.permit_seq = S.permit_seq + 1
  redis.call('ZADD', PERMITS_KEY, NOW_MS + math.floor(cfg.permit_ttl_s * 1000), permit)
  return permit
end

-- The transitions this run made, for the reply (see `made` above).
local function made()
  return table.concat(MADE, ',')
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
    retry_after_ms, S.config, S.success, S.failure, S.rejected, S.forced_until_ms, S.forced_actor, S.forced_reason,
    S.incarnation or '', made(),
  }
end

-- The Snapshot of the API (v1.1: `state` effective, `machine_state`, `force`), as JSON, for events.
local function snapshot_json()
  local reply = snapshot_reply()
  local retry_after_ms = reply[7]
  local force = cjson.null
  if S.forced ~= '' then
    force = {
      mode = S.forced, ['until'] = S.forced_until_ms ~= 0 and S.forced_until_ms / 1000 or cjson.null,
      actor = S.forced_actor ~= '' and S.forced_actor or cjson.null, reason = S.forced_reason,
    }
  end
  local body = cjson.encode({
    name = NAME, state = effective(), machine_state = S.state, forced = S.forced ~= '' and S.forced or cjson.null,
    force = force, generation = S.generation,
    consecutive_failures = S.consecutive_failures, consecutive_successes = S.consecutive_successes,
    opened_at = S.opened_at_ms ~= 0 and S.opened_at_ms / 1000 or cjson.null,
    retry_after_s = retry_after_ms >= 0 and retry_after_ms / 1000 or cjson.null,
    counts = {success = S.success, failure = S.failure, rejected = S.rejected},
    incarnation = (S.incarnation or '') ~= '' and S.incarnation or cjson.null,
  })
  -- The config goes in verbatim (re-encoding it with cjson could turn 60.0 into 60), unless it was corrected.
  local config = CONFIG_CORRECTED and cjson.encode(cfg) or S.config
  return string.sub(body, 1, -2) .. ',"config":' .. config .. '}'
end

-- Every script that changes a breaker ends here: write the difference, and after a transition hand out the
-- snapshot it leaves behind (one way: listeners need not read it back).
local function finish()
  save()
  if TRANSITIONED then
    redis.call('PUBLISH', CHANNEL, '{"kind":"breaker","data":' .. snapshot_json() .. '}')
  end
end
