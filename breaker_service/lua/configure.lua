-- configure.lua: create a breaker, or replace or patch its config keeping its state. Runs after _lib.lua.
-- KEYS[1..4] and ARGV[1..2] as in _lib.lua
-- ARGV[3] mode: "create" makes a fresh CLOSED breaker at generation 1 unless it exists (implicit creation:
--         nothing audited or published); "update" replaces the config of an existing breaker; "patch" does the
--         same only while the stored config is still ARGV[7], the one the replica merged the PATCH fields into and
--         checked (compare-and-set: the merge is atomic, its rules are checked in one place, msgspec, and the
--         config is stored as msgspec wrote it). update and patch append an audit entry (from = to = effective
--         state, generation unchanged) to history and publish a `config` event carrying the snapshot.
-- ARGV[4] config JSON (as msgspec encodes BreakerConfig)   ARGV[5] actor or ""   ARGV[6] reason (update, patch)
-- ARGV[7] (patch) the stored config JSON the new one was merged from
-- returns create: 1 when created, 0 when it existed; update, patch: nil when the breaker does not exist, else the
--   snapshot reply (_lib.lua); patch: 0 when the stored config changed meanwhile (nothing changes: merge again)

local mode, config = ARGV[3], ARGV[4]
local actor = ARGV[5] ~= '' and ARGV[5] or nil

if mode == 'create' then
  if redis.call('EXISTS', STATE_KEY) == 1 then return 0 end
  S = {state = 'CLOSED', forced = '', forced_actor = '', forced_reason = '', config = config}
  for _, field in ipairs(NUMBER_FIELDS) do S[field] = 0 end
  S.generation = 1
  save()
  return 1
end

if not load() then return false end
if mode == 'patch' and S.config ~= ARGV[7] then return 0 end
lift_expired_force()
S.config = config
CONFIG_CORRECTED = false
cfg = decode_config(config)
append_history(effective(), effective(), ARGV[6], actor)
finish()
redis.call('PUBLISH', CHANNEL, '{"kind":"config","data":' .. snapshot_json() .. '}')
return snapshot_reply()
