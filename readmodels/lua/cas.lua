-- Planned writes for several aggregates, each applied only if what it was planned from is still
-- what Redis holds. The projector read the aggregates (lua/read_states.lua), planned the batch in
-- memory (projectors/domain/campaign_plan.py) and sends the resulting commands here: no reads
-- beyond the guard, no JSON work inside Redis, one reply for many aggregates.
--
-- KEYS every key the call touches (on a cluster: one bucket's, so one slot); ARGV names a key
-- by its position in KEYS.
-- ARGV: one block per aggregate:
--   id, state key position, announcement channel position ('0' = announce nothing; the bucket's
--   shard channel, declared in KEYS like a key since on a cluster it must be in the call's slot),
--   parked key position, version read ('0' = none), parked count read,
--   n notices, n write arguments, the notices, the writes (command, argument count, arguments...)
--   where a command's first argument is the position of its key;
--   two commands of this script's own move one member through several sorted sets (scores 0):
--   ZADDTO member position...  and  ZREMFROM member position...
-- Returns the ids of the aggregates whose version or parked count moved since they were read:
-- nothing was written for those, the caller plans them again.
--
-- Memberships (ZADDTO, ZREMFROM, and SADD / SREM of one member) are gathered over the call's
-- aggregates and written with one variadic command per key, removals first, once every guard
-- has passed; then the notices go out, after every write they announce. Each member names its
-- aggregate, so no two aggregates touch the same member and the order between them is free; one
-- aggregate's removal and addition of a member in the same set keep their order (removal
-- first). One command per key rather than per member: a batch's aggregates share their bucket's
-- indexes, and each command costs Redis a call from Lua and, on a replicated server, an entry
-- in its append-only file and in its replicas' stream, which each replica then runs.
local stale = {}
local removals, additions = {}, {} -- per KEYS position: the members, in order
local remove_command, add_command = {}, {} -- per KEYS position: ZREM / SREM, ZADD / SADD
local touched, seen = {}, {} -- KEYS positions in first-touched order (a deterministic order)
local published = {} -- channel, notice, channel, notice...

local function gather(into, commands, command, position, member)
  local members = into[position]
  if not members then
    members = {}
    into[position] = members
    commands[position] = command
    if not seen[position] then
      touched[#touched + 1] = position
      seen[position] = true
    end
  end
  if command == 'ZADD' then members[#members + 1] = 0 end
  members[#members + 1] = member
end

local i = 1
while i <= #ARGV do
  local id, state, channel = ARGV[i], KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])]
  local parked = KEYS[tonumber(ARGV[i + 3])]
  local notices, writes = tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  local first = i + 8
  local last = first + notices + writes - 1
  if (redis.call('HGET', state, 'v') or '0') ~= ARGV[i + 4]
      or redis.call('HLEN', parked) ~= tonumber(ARGV[i + 5]) then
    stale[#stale + 1] = id
  else
    local w = first + notices
    while w <= last do
      local command, count = ARGV[w], tonumber(ARGV[w + 1])
      if command == 'ZADDTO' then
        for k = w + 3, w + 1 + count do gather(additions, add_command, 'ZADD', tonumber(ARGV[k]), ARGV[w + 2]) end
      elseif command == 'ZREMFROM' then
        for k = w + 3, w + 1 + count do gather(removals, remove_command, 'ZREM', tonumber(ARGV[k]), ARGV[w + 2]) end
      elseif command == 'SADD' and count == 2 then
        gather(additions, add_command, 'SADD', tonumber(ARGV[w + 2]), ARGV[w + 3])
      elseif command == 'SREM' and count == 2 then
        gather(removals, remove_command, 'SREM', tonumber(ARGV[w + 2]), ARGV[w + 3])
      else
        redis.call(command, KEYS[tonumber(ARGV[w + 2])], unpack(ARGV, w + 3, w + 1 + count))
      end
      w = w + 2 + count
    end
    for n = first, first + notices - 1 do
      published[#published + 1] = channel
      published[#published + 1] = ARGV[n]
    end
  end
  i = last + 1
end

-- At most this many arguments a command (unpack's stack is bounded).
local STEP = 1000
local function write(command, key, members)
  for from = 1, #members, STEP do
    redis.call(command, key, unpack(members, from, math.min(from + STEP - 1, #members)))
  end
end
for _, position in ipairs(touched) do
  if removals[position] then write(remove_command[position], KEYS[position], removals[position]) end
end
for _, position in ipairs(touched) do
  if additions[position] then write(add_command[position], KEYS[position], additions[position]) end
end
for n = 1, #published, 2 do redis.call('SPUBLISH', published[n], published[n + 1]) end
return stale
