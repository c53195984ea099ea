-- delete.lua: remove every key of the breaker and announce it. Runs after _lib.lua.
-- KEYS[1..4] and ARGV[1..2] as in _lib.lua; no further arguments.
-- returns 1 when the breaker existed, 0 when it did not

if redis.call('EXISTS', STATE_KEY) == 0 then return 0 end
redis.call('DEL', STATE_KEY, PERMITS_KEY, WINDOW_KEY, HISTORY_KEY)
redis.call('PUBLISH', CHANNEL, cjson.encode({kind = 'deleted', data = {name = NAME}}))
return 1
