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
local stale = {}
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
        local member = ARGV[w + 2]
        for k = w + 3, w + 1 + count do redis.call('ZADD', KEYS[tonumber(ARGV[k])], 0, member) end
      elseif command == 'ZREMFROM' then
        local member = ARGV[w + 2]
        for k = w + 3, w + 1 + count do redis.call('ZREM', KEYS[tonumber(ARGV[k])], member) end
      else
        redis.call(command, KEYS[tonumber(ARGV[w + 2])], unpack(ARGV, w + 3, w + 1 + count))
      end
      w = w + 2 + count
    end
    for n = first, first + notices - 1 do redis.call('SPUBLISH', channel, ARGV[n]) end
  end
  i = last + 1
end
return stale
