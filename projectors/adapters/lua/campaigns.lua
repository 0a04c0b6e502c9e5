-- The campaign projection: the detail document (ready-to-send JSON), and one sorted index per
-- (sort key, filter value) whose members are `sortvalue \0 id` with score 0, so a page is a
-- ZRANGE BYLEX from the cursor. Each event removes the campaign's old memberships and adds the
-- new ones; a deleted campaign keeps only its version (the guard) and leaves every index.
local FIELDS = {{CAMPAIGN_FIELDS}}
local SORTS = {{SORT_KEYS}}

local function memberships(base, sort, map)
  local p = base .. ':cidx:' .. sort .. ':'
  local keys = {
    p .. 'all',
    p .. 'status:' .. map['x:status'],
    p .. 'channel:' .. map['x:channel'],
    p .. 'owner:' .. map['x:owner'],
  }
  for _, tag in ipairs(cjson.decode(map['x:tags'])) do keys[#keys + 1] = p .. 'tag:' .. tag end
  return keys
end

local function apply_change(base, key, vtext, change)
  local current = hgetall(key)
  if current['deleted'] == '1' then return nil end

  local new = {}
  for name, value in pairs(current) do new[name] = value end
  local updates = {}
  for i = 2, #change, 2 do
    new[change[i]] = change[i + 1]
    updates[#updates + 1] = change[i]
    updates[#updates + 1] = change[i + 1]
  end
  local complete = new['x:status'] and new['x:channel'] and new['x:owner'] and new['x:tags']
  if change[1] ~= 'delete' and not complete then
    -- Refused before any write: Redis keeps what a failing script already wrote.
    return 'campaign ' .. key .. ' has no creation event before version ' .. vtext
  end

  if current['x:status'] then
    for _, sort in ipairs(SORTS) do
      local member = current['s:' .. sort]
      for _, index in ipairs(memberships(base, sort, current)) do redis.call('ZREM', index, member) end
    end
  end

  if change[1] == 'delete' then
    redis.call('DEL', key)
    redis.call('HSET', key, 'deleted', '1', 'x:owner', current['x:owner'] or '')
    return nil
  end

  for _, sort in ipairs(SORTS) do
    local member = new['s:' .. sort]
    for _, index in ipairs(memberships(base, sort, new)) do redis.call('ZADD', index, 0, member) end
  end
  updates[#updates + 1] = 'doc'
  updates[#updates + 1] = assemble(FIELDS, new, 'f:', vtext)
  redis.call('HSET', key, unpack(updates))
  return nil
end
