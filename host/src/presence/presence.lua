-- Presence of one hub over every server (see presence/redis.rs for the layout and why).
--
-- KEYS[1] = <base>:servers, a sorted set: server -> when its share dies (ms, Redis's clock).
-- ARGV[1] = <base> (every key below shares its hash tag), ARGV[2] = the operation, then its
-- arguments. Every operation first drops the shares of servers whose time has passed, so no
-- answer counts a dead server's connections.
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

-- Takes a server's whole share out of the totals.
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

local now = now_ms()
local reaped = 0
for _, server in ipairs(redis.call('ZRANGEBYSCORE', servers, '-inf', now)) do
  drop(server)
  reaped = reaped + 1
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

if op == 'change' or op == 'beat' then
  -- ARGV[3] = server, ARGV[4] = TTL (ms), then for 'change' the changes. {0, reaped} when the
  -- server has no share here (it was dropped, or Redis lost it): the caller rewrites it whole.
  local server = ARGV[3]
  if not redis.call('ZSCORE', servers, server) then
    return {0, reaped}
  end
  redis.call('ZADD', servers, now + tonumber(ARGV[4]), server)
  if op == 'change' then
    apply_changes(share_key(server), 5)
  end
  return {1, reaped}
elseif op == 'rewrite' then
  -- ARGV[3] = server, ARGV[4] = TTL (ms), then its holdings: the share replaces what it had.
  local server = ARGV[3]
  drop(server)
  redis.call('ZADD', servers, now + tonumber(ARGV[4]), server)
  add_holdings(share_key(server), 5)
  return {1, reaped}
elseif op == 'leave' then
  drop(ARGV[3])
  return {1, reaped}
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
