-- record.lua: take the outcome of one call, or `count` calls (docs/semantics.md, "record"). Runs after _lib.lua.
-- KEYS[1..4] and ARGV[1..2] as in _lib.lua
-- KEYS[5] brk:{name}:report:<report_id>, only when the outcome has a report_id: it is counted once
-- ARGV[3] "success", "failure" or "rejected"   ARGV[4] count   ARGV[5] duration_ms or ""
-- ARGV[6] permit or ""             ARGV[7] the generation the caller saw, or ""
-- ARGV[8] failures_seen (the counts.failure the reporter knew when the call was admitted) or ""
-- returns nil when the breaker does not exist, else the snapshot reply (_lib.lua)

local REPORT_KEY = KEYS[5]
-- A report_id is remembered for at least permit_ttl_s (and a minute), whichever replica receives it.
local REPORT_MIN_TTL_MS = 60000
local failed = ARGV[3] == 'failure'
local rejected = ARGV[3] == 'rejected'
local count = tonumber(ARGV[4])
local duration_ms = tonumber(ARGV[5])
local permit = ARGV[6]
local generation = tonumber(ARGV[7])
local failures_seen = tonumber(ARGV[8])

-- Adds the outcome to the current bucket, drops buckets that left the window, and answers the window's
-- totals: calls, failures, slow calls.
local function add_to_window()
  local bucket_ms = math.max(1, math.floor(math.floor(cfg.window_s * 1000) / WINDOW_BUCKETS))
  local current = math.floor(NOW_MS / bucket_ms)
  local totals = {c = 0, f = 0, s = 0}
  local stale = {}
  local fields = redis.call('HGETALL', WINDOW_KEY)
  for i = 1, #fields, 2 do
    local bucket, kind = string.match(fields[i], '^(%d+):(%a)$')
    if tonumber(bucket) <= current - WINDOW_BUCKETS then
      stale[#stale + 1] = fields[i]
    else
      totals[kind] = totals[kind] + tonumber(fields[i + 1])
    end
  end
  if #stale > 0 then redis.call('HDEL', WINDOW_KEY, unpack(stale)) end
  local added = {c = count, f = failed and count or 0, s = 0}
  if cfg.slow_call_ms and duration_ms and duration_ms >= cfg.slow_call_ms then added.s = count end
  for kind, n in pairs(added) do
    if n > 0 then
      redis.call('HINCRBY', WINDOW_KEY, string.format('%d:%s', current, kind), n)
      totals[kind] = totals[kind] + n
    end
  end
  return totals
end

local function rate_exceeded(window)
  if not cfg.min_calls or window.c < cfg.min_calls then return nil end
  if cfg.failure_rate and window.f >= cfg.failure_rate * window.c then return 'failure rate exceeded' end
  if cfg.slow_call_rate and window.s >= cfg.slow_call_rate * window.c then return 'slow call rate exceeded' end
  return nil
end

local function record_probe()
  if failed then
    S.open_streak = S.open_streak + 1
    transition('OPEN', 'probe failed', nil)
    return
  end
  S.consecutive_successes = S.consecutive_successes + 1
  if S.consecutive_successes >= cfg.success_threshold then
    S.open_streak = 0
    transition('CLOSED', 'probes succeeded', nil)
  end
end

local function record_closed()
  local was_failing = S.consecutive_failures > 0
  if failed then
    S.consecutive_failures = S.consecutive_failures + count
  else
    S.proven = 1
    -- A success ends the streak, unless its reporter says it was admitted before failures it had not seen (a
    -- late batch from a client's fast path): counted, but it says nothing about the dependency now.
    if not (failures_seen and failures_seen < S.failure) then S.consecutive_failures = 0 end
  end
  local window = cfg.window_s and add_to_window()
  if S.consecutive_failures >= cfg.failure_threshold then
    transition('OPEN', 'failure threshold reached', nil)
    return
  end
  local rate_reason = window and rate_exceeded(window)
  if rate_reason then
    transition('OPEN', rate_reason, nil)
    return
  end
  if was_failing ~= (S.consecutive_failures > 0) then
    -- Clients go strict while failures accumulate and relax when they stop (README, "The client").
    redis.call('PUBLISH', CHANNEL, cjson.encode({kind = 'failures', data = {
      name = NAME, consecutive_failures = S.consecutive_failures, generation = S.generation,
    }}))
  end
end

local function apply()
  lift_expired_force()
  if rejected then
    S.rejected = S.rejected + count
    return
  end
  if failed then
    S.failure = S.failure + count
  else
    S.success = S.success + count
  end
  if S.forced ~= '' or S.state == 'OPEN' then return end
  -- A late result from before a transition must not close or reopen the breaker.
  if generation and generation ~= S.generation then return end
  drop_expired_permits()
  local had_permit = permit ~= '' and redis.call('ZREM', PERMITS_KEY, permit) == 1
  if S.state == 'HALF_OPEN' then
    if had_permit then record_probe() end
    return
  end
  record_closed()
end

-- True when this report_id was counted before (by any replica): the outcome is not applied again.
local function already_counted()
  if not REPORT_KEY then return false end
  local ttl_ms = math.max(math.floor(cfg.permit_ttl_s * 1000), REPORT_MIN_TTL_MS)
  return not redis.call('SET', REPORT_KEY, '1', 'NX', 'PX', ttl_ms)
end

if not load() then return false end
if already_counted() then
  lift_expired_force()
else
  apply()
end
finish()
return snapshot_reply()
