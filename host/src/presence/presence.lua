-- Presence of one hub over every server (see presence/redis.rs for the layout and why).
--
-- KEYS[1] = <base>:servers, a sorted set: server -> when its share dies (ms, Redis's clock).
-- ARGV[1] = <base> (every key below shares its hash tag), ARGV[2] = the operation, then its
-- arguments. A server's share dies when its time has passed; the writes and heartbeats of the
-- live servers drop dead shares, a bounded part per call. Reads only read.
--
-- Totals over every live share, read in O(1):
--   <base>:n            connection -> number of shares holding it (2 while it moves between servers)
--   <base>:who          connection -> user, for authenticated connections
--   <base>:users        user -> connections
--   <base>:g:<group>    connection -> number of shares holding it in the group
-- One server's share, to take its part out of the totals when it dies:
--   <base>:s:<server>             connection -> user ('' when anonymous)
--   <base>:s:<server>:gs          groups it has members of
--   <base>:s:<server>:g:<group>   its members of the group
local servers = KEYS[1]
local base = ARGV[1]
local op = ARGV[2]
local conns = base .. ':n'
local who = base .. ':who'
local users = base .. ':users'

local function group_key(group)
  return base .. ':g:' .. group
end

local function share_key(server)
  return base .. ':s:' .. server
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function decrement(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then
    redis.call('HDEL', key, field)
  end
end

local function connect(share, c, user)
  if redis.call('HSETNX', share, c, user) == 0 then
    return
  end
  redis.call('HINCRBY', conns, c, 1)
  if user ~= '' then
    redis.call('HSET', who, c, user)
    redis.call('HINCRBY', users, user, 1)
  end
end

local function join(share, c, group)
  if redis.call('SADD', share .. ':g:' .. group, c) == 0 then
    return
  end
  redis.call('SADD', share .. ':gs', group)
  redis.call('HINCRBY', group_key(group), c, 1)
end

local function leave(share, c, group)
  local mine = share .. ':g:' .. group
  if redis.call('SREM', mine, c) == 0 then
    return
  end
  if redis.call('SCARD', mine) == 0 then
    redis.call('SREM', share .. ':gs', group)
  end
  decrement(group_key(group), c)
end

local function disconnect(share, c)
  local user = redis.call('HGET', share, c)
  if not user then
    return
  end
  redis.call('HDEL', share, c)
  if redis.call('HINCRBY', conns, c, -1) <= 0 then
    redis.call('HDEL', conns, c)
    redis.call('HDEL', who, c)
  end
  if user ~= '' then
    decrement(users, user)
  end
end

-- Takes a server's whole share out of the totals (its own, to rewrite it).
local function drop(server)
  local share = share_key(server)
  for _, group in ipairs(redis.call('SMEMBERS', share .. ':gs')) do
    for _, c in ipairs(redis.call('SMEMBERS', share .. ':g:' .. group)) do
      leave(share, c, group)
    end
  end
  for _, c in ipairs(redis.call('HKEYS', share)) do
    disconnect(share, c)
  end
  redis.call('DEL', share, share .. ':gs')
  redis.call('ZREM', servers, server)
end

-- Takes at most `budget` memberships and connections of a dead server's share out of the
-- totals, so that no one script holds Redis up for a large share; the server leaves the sorted
-- set once its share is gone. Returns what is left of the budget (0: there may be more).
local function drop_some(server, budget)
  local share = share_key(server)
  -- One pass of SSCAN/HSCAN returns every element there at its start; each is taken out as it
  -- comes, until the budget is spent.
  for _, group in ipairs(redis.call('SMEMBERS', share .. ':gs')) do
    local mine = share .. ':g:' .. group
    local cursor = '0'
    repeat
      local page = redis.call('SSCAN', mine, cursor, 'COUNT', budget)
      cursor = page[1]
      for _, c in ipairs(page[2]) do
        if budget > 0 then
          leave(share, c, group)
          budget = budget - 1
        end
      end
    until budget == 0 or cursor == '0'
    if budget == 0 then
      return 0
    end
  end
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', share, cursor, 'COUNT', budget)
    cursor = page[1]
    -- Field, value, field, value...
    for k = 1, #page[2], 2 do
      if budget > 0 then
        disconnect(share, page[2][k])
        budget = budget - 1
      end
    end
  until budget == 0 or cursor == '0'
  if redis.call('EXISTS', share) == 1 then
    return 0
  end
  redis.call('DEL', share .. ':gs')
  redis.call('ZREM', servers, server)
  return budget
end

local now = now_ms()

-- Dead shares are dropped by the writes and heartbeats of live servers, this many memberships
-- and connections a call (about 8 ms of Redis's time).
local REAP_BUDGET = 500

-- Drops what the budget allows of the shares whose time has passed: how many shares were
-- dropped whole, and 1 if some remain.
local function reap()
  local budget = REAP_BUDGET
  local reaped = 0
  for _, server in ipairs(redis.call('ZRANGEBYSCORE', servers, '-inf', now)) do
    if budget == 0 then
      return reaped, 1
    end
    budget = drop_some(server, budget)
    if redis.call('ZSCORE', servers, server) then
      return reaped, 1
    end
    reaped = reaped + 1
  end
  return reaped, 0
end

-- Adds a share's holdings from ARGV[i] on: connection, user, number of groups, groups.
local function add_holdings(share, i)
  while i <= #ARGV do
    local c = ARGV[i]
    connect(share, c, ARGV[i + 1])
    local n = tonumber(ARGV[i + 2])
    for k = 1, n do
      join(share, c, ARGV[i + 2 + k])
    end
    i = i + 3 + n
  end
end

-- Applies changes from ARGV[i] on, in order: c(onnected) connection user,
-- d(isconnected) connection n group..., j(oined) connection group, l(eft) connection group.
local function apply_changes(share, i)
  while i <= #ARGV do
    local kind, c = ARGV[i], ARGV[i + 1]
    if kind == 'c' then
      connect(share, c, ARGV[i + 2])
      i = i + 3
    elseif kind == 'd' then
      local n = tonumber(ARGV[i + 2])
      for k = 1, n do
        leave(share, c, ARGV[i + 2 + k])
      end
      disconnect(share, c)
      i = i + 3 + n
    elseif kind == 'j' then
      join(share, c, ARGV[i + 2])
      i = i + 3
    elseif kind == 'l' then
      leave(share, c, ARGV[i + 2])
      i = i + 3
    else
      error('unknown presence change ' .. tostring(kind))
    end
  end
end

if op == 'change' or op == 'add' or op == 'beat' or op == 'reap' then
  -- ARGV[3] = server, ARGV[4] = TTL (ms), then for 'change' the changes, for 'add' more
  -- holdings (a share rewritten in parts). Answers {status,
  -- shares dropped, 1 if dead shares remain}; status 0 when the server's share is dead or
  -- gone (it was paused past its time, or Redis lost it): the caller rewrites it whole.
  -- 'reap' only goes on dropping dead shares.
  -- A share whose time has passed is dead even before it is dropped (perhaps in part).
  local server = ARGV[3]
  local deadline = redis.call('ZSCORE', servers, server)
  local alive = deadline and tonumber(deadline) > now
  local reaped, more = reap()
  if op == 'reap' then
    return {1, reaped, more}
  end
  if not alive then
    return {0, reaped, more}
  end
  redis.call('ZADD', servers, now + tonumber(ARGV[4]), server)
  if op == 'change' then
    apply_changes(share_key(server), 5)
  elseif op == 'add' then
    add_holdings(share_key(server), 5)
  end
  return {1, reaped, more}
elseif op == 'rewrite' then
  -- ARGV[3] = server, ARGV[4] = TTL (ms), then its holdings: the share replaces what it had.
  local reaped, more = reap()
  local server = ARGV[3]
  drop(server)
  redis.call('ZADD', servers, now + tonumber(ARGV[4]), server)
  add_holdings(share_key(server), 5)
  return {1, reaped, more}
elseif op == 'leave' then
  drop(ARGV[3])
  return {1, 0, 0}
elseif op == 'connections' then

  return redis.call('HLEN', conns)
elseif op == 'users' then
  return redis.call('HLEN', users)
elseif op == 'user' then
  return tonumber(redis.call('HGET', users, ARGV[3]) or '0')
elseif op == 'size' then
  return redis.call('HLEN', group_key(ARGV[3]))
elseif op == 'members' then
  -- ARGV[3] = group, ARGV[4] = limit: connection, user ('' when anonymous), ...
  local key = group_key(ARGV[3])
  local limit = tonumber(ARGV[4])
  local found = {}
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', key, cursor, 'COUNT', 100)
    cursor = page[1]
    for k = 1, #page[2], 2 do
      if #found >= 2 * limit then
        break
      end
      local c = page[2][k]
      found[#found + 1] = c
      found[#found + 1] = redis.call('HGET', who, c) or ''
    end
  until cursor == '0' or #found >= 2 * limit
  return found
end
return redis.error_reply('unknown presence operation ' .. tostring(op))
