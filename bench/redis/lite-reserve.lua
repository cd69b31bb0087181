-- SPDX-License-Identifier: MIT
-- "Redis lite", a lower bound for any Redis budget keeper: counters only,
-- no window and no check. Request: add the reservation to three scopes.
-- KEYS and ARGV as reserve.lua (the limits are ignored).
local granted = tonumber(ARGV[1])
local warn = math.ceil(granted * tonumber(ARGV[2]) / 1000)
local hard = math.ceil(granted * tonumber(ARGV[3]) / 1000)
for s = 1, 3 do redis.call('HINCRBY', KEYS[s], 'res', hard) end
redis.call('HSET', KEYS[4], 'in', 0, 'out', 0, 'left', hard)
return { granted, warn, hard }
