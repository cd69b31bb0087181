-- SPDX-License-Identifier: MIT
-- Request: reserve grant x hard multiplier in three scopes, all or nothing.
-- KEYS: scope global, scope user, scope process, allocation.
-- ARGV: granted tokens, warn permille, hard permille, then the limits per
-- minute, hour, day and in flight (0: none), the same for every scope.
-- Returns {granted, warnAt, hardLimit} or BUDGET_EXHAUSTED scope window.
local now = now_usec()
local granted = tonumber(ARGV[1])
local warn = math.ceil(granted * tonumber(ARGV[2]) / 1000)
local hard = math.ceil(granted * tonumber(ARGV[3]) / 1000)
local limits = { tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]) }
local in_flight = tonumber(ARGV[7])
local scopes = {}

for s = 1, 3 do
  local st = scope_load(KEYS[s], now)
  for i = 1, 3 do
    if limits[i] > 0 and st.used[i] + st.res + hard > limits[i] then
      return redis.error_reply('BUDGET_EXHAUSTED ' .. KEYS[s] .. ' ' .. WINDOW_NAMES[i])
    end
  end
  if in_flight > 0 and st.res + hard > in_flight then
    return redis.error_reply('BUDGET_EXHAUSTED ' .. KEYS[s] .. ' in-flight')
  end
  scopes[s] = st
end
for s = 1, 3 do
  scopes[s].res = scopes[s].res + hard
  scopes[s].n = scopes[s].n + 1
  scope_store_reservation(scopes[s])
end
redis.call('HSET', KEYS[4], 'granted', granted, 'warn', warn, 'hard', hard, 'left', hard,
  'in', 0, 'out', 0, 'since', now)
return { granted, warn, hard }
