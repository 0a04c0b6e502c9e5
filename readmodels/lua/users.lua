-- The user projection: the profile document (ready-to-send JSON) from per-field fragments.
local FIELDS = {{USER_FIELDS}}

local function applied_version(key, change)
  return tonumber(redis.call('HGET', key, 'v') or '0')
end

local function apply_change(key, vtext, change)
  local map = hgetall(key)
  local updates = {'v', vtext}
  for i = 1, #change, 2 do
    map[change[i]] = change[i + 1]
    updates[#updates + 1] = change[i]
    updates[#updates + 1] = change[i + 1]
  end
  updates[#updates + 1] = 'doc'
  updates[#updates + 1] = assemble(FIELDS, map, '', vtext)
  redis.call('HSET', key, unpack(updates))
  return nil
end
