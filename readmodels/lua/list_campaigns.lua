#!lua flags=no-writes
-- One bucket's share of a page of campaigns, read-only: up to limit + 1 index members, in order,
-- after the cursor. Walks the smallest of the filter indexes (all of them share members) from the cursor
-- and keeps members present in every other filter index. The caller merges the buckets' shares
-- (k-way, by member) and reads the documents. The cursor is a member: keyset pagination, so
-- campaigns created meanwhile never shift a page.
-- KEYS the bucket's indexes of the filters, of the sort asked for (the index of all campaigns:
-- no filter)
-- ARGV[1] '1' descending  ARGV[2] limit  ARGV[3] cursor member or ''  ARGV[4] most members to
-- examine in this call
-- Returns {frontier, member, member, ...}: frontier '' when the bucket has nothing more after the
-- last member examined, else that last member examined (every member up to it was looked at).
local desc = ARGV[1] == '1'
local limit, cursor, budget = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])

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
  for n, member in ipairs(members) do
    examined = examined + 1
    last = member
    local keep = true
    for _, other in ipairs(indexes) do
      if not redis.call('ZSCORE', other, member) then keep = false break end
    end
    if keep then
      found[#found + 1] = member
      if #found > limit then
        if n == #members and #members < chunk then exhausted = true end
        break
      end
    end
  end
  if #found <= limit and #members < chunk then exhausted = true break end
  from = '(' .. last
end

local result = {exhausted and '' or (last or '')}
for _, member in ipairs(found) do result[#result + 1] = member end
return result
