-- SPDX-License-Identifier: MIT
-- "Redis lite" Report: commit the increase to three scopes' totals.
-- KEYS and ARGV as report.lua.
local input, output = tonumber(ARGV[1]), tonumber(ARGV[2])
local a = redis.call('HMGET', KEYS[4], 'in', 'out', 'left')
if not a[1] then return redis.error_reply('UNKNOWN_ALLOCATION ' .. KEYS[4]) end
local delta = input + output - tonumber(a[1]) - tonumber(a[2])
local from_reserved = math.min(delta, tonumber(a[3]))
for s = 1, 3 do
  redis.call('HINCRBY', KEYS[s], 'total', delta)
  redis.call('HINCRBY', KEYS[s], 'res', -from_reserved)
end
redis.call('HSET', KEYS[4], 'in', input, 'out', output, 'left', tonumber(a[3]) - from_reserved)
return { 'ok', input + output }
