-- idempotency_claim.lua: claim an Idempotency-Key for one admin write, or read what holds it already.
-- KEYS[1] brk:idem:{scope}   ARGV[1] the pending entry (JSON)   ARGV[2] its TTL ms
-- returns false (nil) when claimed, else the entry that holds the key (pending, or the stored answer), untouched

local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
