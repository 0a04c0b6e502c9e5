#!lua flags=no-writes
-- One page of campaigns, read-only, in one round trip. Walks the smallest of the filter indexes
-- (all of them share members) from the cursor, keeps members present in every other filter
-- index, and returns the documents. The cursor is the last member returned: keyset pagination,
-- so campaigns created meanwhile never shift a page.
-- KEYS the indexes of the filters, of the sort asked for (the index of all campaigns: no filter)
-- ARGV[1] the beginning of a campaign's key (the id follows)  ARGV[2] '1' descending
-- ARGV[3] limit  ARGV[4] cursor member or ''  ARGV[5] most members to examine in this call
-- Returns {next cursor member or '', doc, doc, ...}.
local campaign_key, desc = ARGV[1], ARGV[2] == '1'
local limit, cursor, budget = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])

local indexes = {}
for i = 1, #KEYS do indexes[i] = KEYS[i] end

local driver, smallest = 1, nil
for i, index in ipairs(indexes) do
  local size = redis.call('ZCARD', index)
  if smallest == nil or size < smallest then driver, smallest = i, size end
end
if smallest == 0 then return {''} end
local walk = indexes[driver]
table.remove(indexes, driver)

local from
if desc then
  if cursor == '' then from = '+' else from = '(' .. cursor end
else
  if cursor == '' then from = '-' else from = '(' .. cursor end
end
local to = desc and '-' or '+'
local chunk = math.max(limit + 1, 50)

local found, examined, last, exhausted = {}, 0, nil, false
while #found <= limit and examined < budget do
  local members
  if desc then
    members = redis.call('ZRANGE', walk, from, to, 'BYLEX', 'REV', 'LIMIT', 0, chunk)
  else
    members = redis.call('ZRANGE', walk, from, to, 'BYLEX', 'LIMIT', 0, chunk)
  end
  for _, member in ipairs(members) do
    examined = examined + 1
    last = member
    local keep = true
    for _, other in ipairs(indexes) do
      if not redis.call('ZSCORE', other, member) then keep = false break end
    end
    if keep then
      found[#found + 1] = member
      if #found > limit then break end
    end
  end
  if #members < chunk then exhausted = true break end
  from = '(' .. last
end

local next_cursor = ''
if #found > limit then
  found[#found] = nil
  next_cursor = found[#found]
elseif not exhausted and last then
  -- Stopped by the budget: the page is short, and the next one resumes after what was examined.
  next_cursor = last
end

local result = {next_cursor}
for _, member in ipairs(found) do
  local id = string.match(member, '^.*%z(.*)$')
  local doc = redis.call('HGET', campaign_key .. id, 'doc')
  if doc then result[#result + 1] = doc end
end
return result
