-- One write to a hub's state, with the hub's quota of keys and bytes (hubhost, state/redis.rs).
--
-- KEYS[1] the value's key            {prefix}:{hub}:state:{name}
-- KEYS[2] sizes, a hash name -> bytes {prefix}:{hub}:state-meta:sizes  (its length: the keys)
-- KEYS[3] expiries, a sorted set      {prefix}:{hub}:state-meta:expiry (score: unix ms)
-- KEYS[4] total bytes                 {prefix}:{hub}:state-meta:bytes
-- ARGV: operation, name, max keys, max bytes, then the operation's arguments.
--
-- Returns {'ok', result} or {'quota', 'keys' | 'bytes'} (nothing changed); Redis errors (such
-- as WRONGTYPE) are returned as they are. A key's bytes are its name's length plus its value's
-- (a set: its members'), as the in-memory store counts them.

local op, name = ARGV[1], ARGV[2]
local max_keys, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local value_key, sizes, expiry, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- Keys that expired since the last write stop counting.
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', '(' .. now, 'LIMIT', 0, 256)) do
  local size = tonumber(redis.call('HGET', sizes, gone) or '0')
  redis.call('HDEL', sizes, gone)
  redis.call('DECRBY', total, size)
  redis.call('ZREM', expiry, gone)
end

local old = redis.call('HGET', sizes, name)
local old_size = old and tonumber(old) or 0
local keys = redis.call('HLEN', sizes)
local bytes = tonumber(redis.call('GET', total) or '0')

-- nil if the key may go from its size to new_size, else what would be exceeded.
local function refused(new_size)
  if not old and keys + 1 > max_keys then return 'keys' end
  if new_size > old_size and bytes - old_size + new_size > max_bytes then return 'bytes' end
  return nil
end

local function account(new_size)
  redis.call('HSET', sizes, name, new_size)
  redis.call('INCRBY', total, new_size - old_size)
end

local function forget()
  if old then
    redis.call('HDEL', sizes, name)
    redis.call('DECRBY', total, old_size)
  end
  redis.call('ZREM', expiry, name)
end

local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

if op == 'set' then
  local value, ttl = ARGV[5], tonumber(ARGV[6])
  local new_size = #name + #value
  local exceeded = refused(new_size)
  if exceeded then return {'quota', exceeded} end
  if ttl then
    redis.call('SET', value_key, value, 'PX', ttl)
    redis.call('ZADD', expiry, now + ttl, name)
  else
    redis.call('SET', value_key, value)
    redis.call('ZREM', expiry, name)
  end
  account(new_size)
  return {'ok', 1}
elseif op == 'delete' then
  local removed = redis.call('DEL', value_key)
  forget()
  return {'ok', removed}
elseif op == 'incr' then
  local existed = redis.call('EXISTS', value_key) == 1
  local reply = redis.pcall('INCRBY', value_key, ARGV[5])
  if failed(reply) then return reply end
  local new_size = #name + redis.call('STRLEN', value_key)
  local exceeded = refused(new_size)
  if exceeded then
    if existed then
      redis.call('DECRBY', value_key, ARGV[5])
    else
      redis.call('DEL', value_key)
    end
    return {'quota', exceeded}
  end
  account(new_size)
  return {'ok', reply}
elseif op == 'set-add' then
  local member = ARGV[5]
  local present = redis.pcall('SISMEMBER', value_key, member)
  if failed(present) then return present end
  if present == 1 then return {'ok', 0} end
  local base = old and old_size or #name
  local new_size = base + #member
  local exceeded = refused(new_size)
  if exceeded then return {'quota', exceeded} end
  redis.call('SADD', value_key, member)
  account(new_size)
  return {'ok', 1}
elseif op == 'set-remove' then
  local member = ARGV[5]
  local removed = redis.pcall('SREM', value_key, member)
  if failed(removed) then return removed end
  if removed == 1 then
    if redis.call('EXISTS', value_key) == 0 then
      forget() -- the set emptied and Redis removed it
    elseif old then
      account(math.max(old_size - #member, #name))
    end
  end
  return {'ok', removed}
elseif op == 'expire' then
  local ttl = tonumber(ARGV[5])
  local set = redis.call('PEXPIRE', value_key, ttl)
  if set == 1 then redis.call('ZADD', expiry, now + ttl, name) end
  return {'ok', set}
end
return redis.error_reply('unknown state operation ' .. tostring(op))
