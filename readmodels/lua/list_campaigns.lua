#!lua flags=no-writes
-- One bucket's share of a page of campaigns, read-only: up to limit + 1 index members, in order,
-- after the cursor. Walks one sorted index (all campaigns' or the owner's, of the sort asked for)
-- from the cursor and keeps the members whose campaign id is in every filter set (status,
-- channel, tag): the filters are intersected here, at read time, so the projection moves a
-- campaign's sorted memberships only with its sort values and its set memberships only with
-- its filter values. The caller merges the buckets' shares (k-way, by member) and reads the
-- documents. The cursor is a member: keyset pagination, so campaigns created meanwhile never
-- shift a page.
-- KEYS[1] the bucket's sorted index walked   KEYS[2..] the bucket's filter sets (ids)
-- ARGV[1] '1' descending  ARGV[2] limit  ARGV[3] cursor member or ''  ARGV[4] most members to
-- examine in this call  ARGV[5] 'z' when KEYS[2..] are sorted indexes of layout 1 (one per
-- status, channel, tag: a member is in one if its ZSCORE is there); 's' when they are id sets and
-- members `sortvalue \0 id` (layout 2); 'p' when members and sets hold packed ids (layout 3,
-- readmodels.campaigns.packed_id: the member's last byte says where its id starts)
-- Returns {frontier, member, member, ...}: frontier '' when the bucket has nothing more after the
-- last member examined, else that last member examined (every member up to it was looked at).
local desc = ARGV[1] == '1'
local limit, cursor, budget = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local walk = KEYS[1]
local sorted_filters = ARGV[5] == 'z'
local packed = ARGV[5] == 'p'

-- The id the filter sets hold, from a member.
local function id_of(member)
  if packed then
    -- 0x00: a 16-byte UUID before it; 0x01: the id's length in the 2 bytes before it.
    if string.byte(member, -1) == 0 then return string.sub(member, -17, -2) end
    local n = string.byte(member, -3) * 256 + string.byte(member, -2)
    return string.sub(member, -3 - n, -4)
  end
  -- The member is `sortvalue \0 id`; ids hold no \0.
  return string.match(member, '%z([^%z]*)$')
end

local sets = {}
for i = 2, #KEYS do
  -- An empty filter set (or one of a value nobody has): nothing in this bucket matches.
  local size
  if sorted_filters then size = redis.call('ZCARD', KEYS[i]) else size = redis.call('SCARD', KEYS[i]) end
  if size == 0 then return {''} end
  sets[#sets + 1] = KEYS[i]
end
if redis.call('ZCARD', walk) == 0 then return {''} end

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
  -- Never more than the budget left: it bounds what one call examines.
  local want = math.min(chunk, budget - examined)
  local members
  if desc then
    members = redis.call('ZRANGE', walk, from, to, 'BYLEX', 'REV', 'LIMIT', 0, want)
  else
    members = redis.call('ZRANGE', walk, from, to, 'BYLEX', 'LIMIT', 0, want)
  end
  for n, member in ipairs(members) do
    examined = examined + 1
    last = member
    local keep = true
    if sorted_filters then
      for _, index in ipairs(sets) do
        if not redis.call('ZSCORE', index, member) then keep = false break end
      end
    elseif #sets > 0 then
      local id = id_of(member)
      for _, set in ipairs(sets) do
        if redis.call('SISMEMBER', set, id) == 0 then keep = false break end
      end
    end
    if keep then
      found[#found + 1] = member
      if #found > limit then
        if n == #members and #members < want then exhausted = true end
        break
      end
    end
  end
  if #found <= limit and #members < want then exhausted = true break end
  from = '(' .. last
end

local result = {exhausted and '' or (last or '')}
for _, member in ipairs(found) do result[#result + 1] = member end
return result
