-- The stats projection's states in key layout 1, after lua/stats_counters.lua: each aggregate's
-- state a hash of its own (KEYS[1]: status, channel, currency, units, frac, deleted and `v`); the
-- change is {kind, minute, name, value...}. Kept to write a live generation of layout 1 until the
-- projectors' rebuild swaps it out (readmodels.generations.LAYOUT_VERSIONS).
local function applied_version(key, change)
  return tonumber(redis.call('HGET', key, 'v') or '0')
end

local function apply_change(key, vtext, change)
  local kind, minute = change[1], change[2]
  if kind == 'campaign' then
    local state = hgetall(key)
    local new = {}
    for name, value in pairs(state) do new[name] = value end
    local updates = {'v', vtext}
    for i = 3, #change, 2 do
      new[change[i]] = change[i + 1]
      updates[#updates + 1] = change[i]
      updates[#updates + 1] = change[i + 1]
    end
    if not (new['status'] and new['channel'] and new['currency']) then
      return ARGV[3] .. ' has no creation event before version ' .. vtext
    end
    move_counters(state, new)
    redis.call('HSET', key, unpack(updates))
  else
    if change[3] == '1' then redis.call('HINCRBY', counts_key, 'users.total', 1) end
    redis.call('HSET', key, 'v', vtext)
  end
  redis.call('HINCRBY', per_minute_key, minute, 1)
  return nil
end
