-- restore.lua: put back a breaker the store lost (Redis restarted empty, FLUSHALL, a failover to a replica that
-- lacks the latest writes), from what a service replica last saw of it. Runs after _lib.lua.
-- Idempotent: however many replicas restore the same breaker at once, it is restored once, with one history
-- entry; a later caller only lifts the generation above the one it saw.
-- KEYS[1..4] and ARGV[1..2] as in _lib.lua
-- KEYS[5] brk:registry; absent on Redis Cluster (the caller adds the name to the registry itself)
-- ARGV[3] store epoch   ARGV[4] the breaker's incarnation as the replica knew it   ARGV[5] the generation it saw
-- ARGV[6] config JSON   ARGV[7] the force in effect: "OPEN", "CLOSED" or ""
-- ARGV[8] the time the force has left in ms ("": no end)   ARGV[9] the force's actor or ""   ARGV[10] its reason
-- ARGV[11] "reset": the store lost everything (a breaker of that name made since is replaced, unless an admin
--          acted on it); "lost": the store lost writes (only the same incarnation is restored)
-- returns 1 when restored, 0 when there was nothing to restore

local RESTORE_REASON = 'restored after store reset'
-- Replicas that notice the same reset restore within seconds of each other; a restore older than this is a
-- past one, and a later loss (a second failover) is restored again.
local RESTORE_WINDOW_MS = 30000
local REGISTRY_KEY = KEYS[5]
local epoch, incarnation, seen_generation = ARGV[3], ARGV[4], tonumber(ARGV[5])
local config, force, force_ttl_ms = ARGV[6], ARGV[7], tonumber(ARGV[8])
local after_reset = ARGV[11] == 'reset'

-- Whether an admin configured or forced this breaker: its history names an actor. An admin's word given after
-- the reset is newer than what a replica remembers from before it.
local function admin_acted()
  for _, entry in ipairs(redis.call('XRANGE', HISTORY_KEY, '-', '+')) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'transition' and type(cjson.decode(fields[i + 1]).actor) == 'string' then return true end
    end
  end
  return false
end

local exists = load()
if not exists and not after_reset then return 0 end
if exists then
  local restored_at_ms = tonumber(S.restored_at_ms) or 0
  if S.restored_epoch == epoch and NOW_MS - restored_at_ms < RESTORE_WINDOW_MS then
    if S.generation <= seen_generation then
      S.generation = seen_generation + 1
      save()
    end
    return 0
  end
  -- The same breaker with every write this replica saw: nothing was lost.
  if S.incarnation == incarnation and S.generation >= seen_generation then return 0 end
  -- Another breaker of that name: deleted and made again (forget ours), or made since the reset from defaults
  -- (replace it, unless an admin acted on it).
  if S.incarnation ~= incarnation and (not after_reset or admin_acted()) then return 0 end
end

local generation = math.max(seen_generation, exists and S.generation or 0)
redis.call('DEL', STATE_KEY)
saved = {}
S = {
  state = 'CLOSED', forced = '', config = config, incarnation = incarnation,
  restored_epoch = epoch, restored_at_ms = NOW_MS, forced_actor = '', forced_reason = '',
}
for _, field in ipairs(NUMBER_FIELDS) do S[field] = 0 end
S.generation = generation
cfg = decode_config(config)
if REGISTRY_KEY then redis.call('SADD', REGISTRY_KEY, NAME) end

local in_effect = force ~= '' and (force_ttl_ms == nil or force_ttl_ms > 0)
transition('CLOSED', RESTORE_REASON, nil, in_effect and force or '')
if in_effect then
  if force_ttl_ms then S.forced_until_ms = NOW_MS + force_ttl_ms end
  S.forced_actor = ARGV[9]
  S.forced_reason = ARGV[10]
end
finish()
redis.call('PUBLISH', CHANNEL, cjson.encode({kind = 'resync', data = {name = NAME, reason = RESTORE_REASON}}))
return 1
