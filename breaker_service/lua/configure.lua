-- configure.lua: create a breaker, or replace its config keeping its state. Runs after _lib.lua.
-- KEYS[1..4] and ARGV[1..2] as in _lib.lua
-- ARGV[3] mode: "create" makes a fresh CLOSED breaker at generation 1 unless it exists (implicit creation:
--         nothing audited or published); "update" replaces the config of an existing breaker, appends an
--         audit entry (from = to = effective state, generation unchanged) to history and publishes a
--         `config` event carrying the snapshot
-- ARGV[4] config JSON (as msgspec encodes BreakerConfig)   ARGV[5] actor or ""   ARGV[6] reason (update)
-- returns create: 1 when created, 0 when it existed; update: nil when the breaker does not exist, else the
--   snapshot reply (_lib.lua)

local mode, config = ARGV[3], ARGV[4]
local actor = ARGV[5] ~= '' and ARGV[5] or nil

local function snapshot_json(reply)
  local forced, opened_at_ms, retry_after_ms = reply[2], reply[6], reply[7]
  local body = cjson.encode({
    name = NAME, state = reply[1], forced = forced ~= '' and forced or cjson.null, generation = reply[3],
    consecutive_failures = reply[4], consecutive_successes = reply[5],
    opened_at = opened_at_ms ~= 0 and opened_at_ms / 1000 or cjson.null,
    retry_after_s = retry_after_ms >= 0 and retry_after_ms / 1000 or cjson.null,
    counts = {success = reply[9], failure = reply[10], rejected = reply[11]},
  })
  -- The config goes in verbatim: re-encoding it with cjson could turn 60.0 into 60.
  return string.sub(body, 1, -2) .. ',"config":' .. reply[8] .. '}'
end

if mode == 'create' then
  if redis.call('EXISTS', STATE_KEY) == 1 then return 0 end
  S = {state = 'CLOSED', forced = '', config = config}
  for _, field in ipairs(NUMBER_FIELDS) do S[field] = 0 end
  S.generation = 1
  save()
  return 1
end

if not load() then return false end
lift_expired_force()
S.config = config
cfg = decode_config(config)
append_history(effective(), effective(), ARGV[6], actor)
save()
local reply = snapshot_reply()
redis.call('PUBLISH', CHANNEL, '{"kind":"config","data":' .. snapshot_json(reply) .. '}')
return reply
