-- SPDX-License-Identifier: MIT
-- "Redis lite" Release: commit, refund the rest, delete the allocation.
-- KEYS and ARGV as release.lua.
local input, output = tonumber(ARGV[1]), tonumber(ARGV[2])
local a = redis.call('HMGET', KEYS[4], 'in', 'out', 'left')
if not a[1] then return redis.error_reply('UNKNOWN_ALLOCATION ' .. KEYS[4]) end
local delta = input + output - tonumber(a[1]) - tonumber(a[2])
local left = tonumber(a[3])
for s = 1, 3 do
  redis.call('HINCRBY', KEYS[s], 'total', delta)
  redis.call('HINCRBY', KEYS[s], 'res', -left)
end
redis.call('DEL', KEYS[4])
return { input + output, left - math.min(delta, left) }
