-- SPDX-License-Identifier: MIT
-- Release: settles with final totals (committed like a report), refunds the
-- rest of the reservation to every scope and deletes the allocation.
-- KEYS: scope global, scope user, scope process, allocation.
-- ARGV: input tokens, output tokens (final totals).
-- Returns {used, refunded}.
local now = now_usec()
local input, output = tonumber(ARGV[1]), tonumber(ARGV[2])
local a, err = usage_update(KEYS[4], input, output)
if not a then return err end

for s = 1, 3 do
  local st = scope_load(KEYS[s], now)
  st.res = st.res - a.left -- the part committed now and the refund
  st.n = st.n - 1
  scope_store_commit(st, a.delta)
end
redis.call('DEL', KEYS[4])
return { input + output, a.left - a.from_reserved }
