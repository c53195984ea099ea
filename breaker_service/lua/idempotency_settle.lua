-- idempotency_settle.lua: end a claim made by idempotency_claim.lua, keeping the write's answer or freeing the key.
-- KEYS[1] brk:idem:{scope}   ARGV[1] the pending entry the caller claimed with (JSON)
-- ARGV[2] the answer entry to keep (JSON), or "" to free the key   ARGV[3] the answer's TTL ms
-- returns 1 when settled, 0 when the key no longer holds that claim (it ran out; another request may hold it now)

if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
