-- acquire.lua: ask to make one call now (docs/semantics.md, "acquire"). Runs after _lib.lua.
-- KEYS[1..4] and ARGV[1..2] as in _lib.lua
-- ARGV[3] "1" for a lease (fleet budgeting, opt-in), "" for the plain protocol
-- ARGV[4] the permit id to grant if one is granted (made by the replica: >= 64 random bits)
-- returns nil when the breaker does not exist, else
--   {allowed (1/0), effective state, generation, permit or "", retry_after_ms (-1: none), made (_lib.lua)}

local lease = ARGV[3] == '1'
local permit_id = ARGV[4]

local function allow(permit)
  return {1, effective(), S.generation, permit or '', -1, made()}
end

local function deny(retry_after_ms)
  S.rejected = S.rejected + 1
  return {0, effective(), S.generation, '', retry_after_ms and math.max(0, retry_after_ms) or -1, made()}
end

local function decide()
  lift_expired_force()
  if S.forced == 'OPEN' then
    if S.forced_until_ms ~= 0 then return deny(S.forced_until_ms - NOW_MS) end
    return deny(nil)
  end
  if S.forced == 'CLOSED' then return allow(nil) end
  if S.state == 'OPEN' then
    if NOW_MS < S.open_until_ms then return deny(S.open_until_ms - NOW_MS) end
    transition('HALF_OPEN', 'open timeout elapsed', nil)
  end
  drop_expired_permits()
  if S.state == 'HALF_OPEN' then
    -- At most half_open_max_calls probes per half-open window in total: a reported probe keeps its slot.
    if S.half_open_used >= cfg.half_open_max_calls then return deny(first_permit_expiry_ms() - NOW_MS) end
    S.half_open_used = S.half_open_used + 1
    return allow(grant_permit(permit_id))
  end
  -- The plain protocol is the classic breaker: CLOSED allows.
  if not lease then return allow(nil) end
  if S.consecutive_failures == 0 and S.proven == 1 then return allow(nil) end
  -- While failures accumulate, or before a success has shown the dependency works, leased calls in flight count
  -- against the budget, so a fleet that opts in cannot send more than failure_threshold calls to a dead dependency.
  if S.consecutive_failures + live_permits() >= cfg.failure_threshold then
    return deny(first_permit_expiry_ms() - NOW_MS)
  end
  return allow(grant_permit(permit_id))
end

if not load() then return false end
local decision = decide()
finish()
return decision
