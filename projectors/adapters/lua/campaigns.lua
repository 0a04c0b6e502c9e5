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

  -- Only the memberships that change are written: an index member is moved (ZREM + ZADD,
  -- two skiplist updates each) only if its index or its sort value changed. Most events change
  -- one index of a sort (status) or none (created, name), and this was most of the script's time.
  local deleting = change[1] == 'delete'
  for _, sort in ipairs(SORTS) do
    local old_member, new_member = current['s:' .. sort], new['s:' .. sort]
    local old_keys = current['x:status'] and memberships(base, sort, current) or {}
    local new_keys = deleting and {} or memberships(base, sort, new)
    local kept = {}
    if old_member == new_member then
      for _, index in ipairs(new_keys) do kept[index] = true end
    end
    for _, index in ipairs(old_keys) do
      if kept[index] then kept[index] = 'both' else redis.call('ZREM', index, old_member) end
    end
    for _, index in ipairs(new_keys) do
      if kept[index] ~= 'both' then redis.call('ZADD', index, 0, new_member) end
    end
  end

  if deleting then
    redis.call('DEL', key)
    redis.call('HSET', key, 'deleted', '1', 'x:owner', current['x:owner'] or '')
    return nil
  end
  updates[#updates + 1] = 'doc'
  updates[#updates + 1] = assemble(FIELDS, new, 'f:', vtext)
  redis.call('HSET', key, unpack(updates))
  return nil
end
