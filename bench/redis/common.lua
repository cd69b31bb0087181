-- SPDX-License-Identifier: MIT
--
-- Shared part of the Redis + Lua budget scripts the benchmark compares
-- tokenbudgetd with (bench/run.sh prepends this file to reserve.lua,
-- report.lua and release.lua and loads each with SCRIPT LOAD). It models
-- what an LLM gateway keeps in Redis: one hash per scope holding the tokens
-- reserved ("res"), the number of open allocations ("n"), the committed
-- total, and three sliding windows (minute, hour, day) kept the way Redis
-- rate limiters keep them (the "sliding window counter" of Upstash's
-- ratelimit, Cloudflare and others): the current fixed window's tokens
-- ("m.cur"), the previous one's ("m.prev") and the current window's index
-- ("m.idx"); usage over the sliding window is prev x (the part of the
-- previous window still inside it) + cur. That is O(1) per window and
-- cheaper than the daemon's rings of 60/60/96 buckets, and less exact:
-- the comparison favours Redis. Time is the server's (TIME), like the
-- daemon reading its clock. Each scope costs one HMGET and one HSET per
-- call, which is what a careful implementer would write: Redis' cost per
-- script is mostly per call made and per value converted.
--
-- What it does not do: queueing, learning, or anything beyond reserve,
-- report and settle.

local WINDOW_NAMES = { 'm', 'h', 'd' }
local WINDOW_USEC = { 60000000, 3600000000, 86400000000 }
local SCOPE_FIELDS = { 'res', 'n', 'total', 'm.cur', 'm.prev', 'm.idx', 'h.cur', 'h.prev', 'h.idx',
  'd.cur', 'd.prev', 'd.idx' }

local function now_usec()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Loads a scope in one HMGET, with every window rolled forward to now:
-- st.used[i] is the tokens used in sliding window i.
local function scope_load(key, now)
  local v = redis.call('HMGET', key, unpack(SCOPE_FIELDS))
  local st = { key = key, res = tonumber(v[1]) or 0, n = tonumber(v[2]) or 0, total = tonumber(v[3]) or 0,
    cur = {}, prev = {}, idx = {}, used = {}, rolled = false }
  for i = 1, 3 do
    local cur, prev, idx = tonumber(v[3 * i + 1]) or 0, tonumber(v[3 * i + 2]) or 0, tonumber(v[3 * i + 3]) or 0
    local width = WINDOW_USEC[i]
    local now_idx = math.floor(now / width)
    if now_idx > idx then
      if now_idx == idx + 1 then prev = cur else prev = 0 end
      cur, idx = 0, now_idx
      st.rolled = true
    end
    local inside = 1 - (now - idx * width) / width
    st.cur[i], st.prev[i], st.idx[i] = cur, prev, idx
    st.used[i] = math.floor(prev * inside) + cur
  end
  return st
end

-- The window fields to write back when a window rolled over.
local function scope_rolled_fields(st, args)
  if not st.rolled then return end
  for i = 1, 3 do
    local w = WINDOW_NAMES[i]
    args[#args + 1] = w .. '.prev'
    args[#args + 1] = st.prev[i]
    args[#args + 1] = w .. '.idx'
    args[#args + 1] = st.idx[i]
    args[#args + 1] = w .. '.cur'
    args[#args + 1] = st.cur[i]
  end
end

-- Writes back what a reservation changes, in one HSET.
local function scope_store_reservation(st)
  local args = { 'res', st.res, 'n', st.n }
  scope_rolled_fields(st, args)
  redis.call('HSET', st.key, unpack(args))
end

-- Commits delta tokens to every window and writes back what changed, in
-- one HSET.
local function scope_store_commit(st, delta)
  for i = 1, 3 do st.cur[i] = st.cur[i] + delta end
  local args = { 'res', st.res, 'n', st.n, 'total', st.total + delta,
    'm.cur', st.cur[1], 'h.cur', st.cur[2], 'd.cur', st.cur[3] }
  scope_rolled_fields(st, args) -- repeats the cur fields: the last value wins, the same
  redis.call('HSET', st.key, unpack(args))
end

-- Reads an allocation's hash and validates new cumulative totals; returns
-- the allocation with the delta and the part of it covered by the
-- reservation, or nil and an error reply.
local function usage_update(key, input, output)
  local a = redis.call('HMGET', key, 'in', 'out', 'left', 'warn', 'hard')
  if not a[1] then
    return nil, redis.error_reply('UNKNOWN_ALLOCATION ' .. key)
  end
  local alloc = { input = tonumber(a[1]), output = tonumber(a[2]), left = tonumber(a[3]),
    warn = tonumber(a[4]), hard = tonumber(a[5]) }
  if input < alloc.input or output < alloc.output then
    return nil, redis.error_reply('INVALID_PARAMETER totals decreased')
  end
  local delta = input + output - alloc.input - alloc.output
  alloc.delta = delta
  alloc.from_reserved = math.min(delta, alloc.left)
  return alloc
end
