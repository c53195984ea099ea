-- create.lua: create a fresh CLOSED breaker at generation 1 unless it exists, within the breaker cap (implicit
-- creation: nothing is audited or published). Runs after _lib.lua.
-- KEYS[1..4] and ARGV[1..2] as in _lib.lua
-- KEYS[5] brk:registry, the set of breaker names; absent on Redis Cluster, where the registry lives in a slot of
--         its own: the caller then checks the cap and adds the name itself, so the cap is approximate there
-- ARGV[3] config JSON   ARGV[4] incarnation (random, made by the replica)   ARGV[5] the cap (read with KEYS[5])
-- returns 1 when created, 0 when it existed, -1 when creating it would exceed the cap

local REGISTRY_KEY = KEYS[5]
local config, incarnation = ARGV[3], ARGV[4]

if redis.call('EXISTS', STATE_KEY) == 1 then return 0 end
if REGISTRY_KEY then
  -- The check and the add are one step, so concurrent creations cannot pass the cap together.
  local registered = redis.call('SISMEMBER', REGISTRY_KEY, NAME) == 1
  if not registered and redis.call('SCARD', REGISTRY_KEY) >= tonumber(ARGV[5]) then return -1 end
  redis.call('SADD', REGISTRY_KEY, NAME)
end
S = {state = 'CLOSED', forced = '', forced_actor = '', forced_reason = '', config = config, incarnation = incarnation}
for _, field in ipairs(NUMBER_FIELDS) do S[field] = 0 end
S.generation = 1
save()
return 1
