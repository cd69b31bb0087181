-- SPDX-License-Identifier: MIT
-- Report: cumulative totals; commits the increase since the last report in
-- every scope (moving it from reserved to committed) and stores the totals.
-- KEYS: scope global, scope user, scope process, allocation.
-- ARGV: input tokens, output tokens (totals so far).
-- Returns {state, used}.
local now = now_usec()
local input, output = tonumber(ARGV[1]), tonumber(ARGV[2])
local a, err = usage_update(KEYS[4], input, output)
if not a then return err end

for s = 1, 3 do
  local st = scope_load(KEYS[s], now)
  st.res = st.res - a.from_reserved
  scope_store_commit(st, a.delta)
end
redis.call('HSET', KEYS[4], 'in', input, 'out', output, 'left', a.left - a.from_reserved)
local used = input + output
local state = 'ok'
if used >= a.hard then state = 'exceeded' elseif used >= a.warn then state = 'warning' end
return { state, used }
