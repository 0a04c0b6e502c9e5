-- What the planner needs of several aggregates, in one reply: per pair of keys (state hash,
-- parked hash) the state's `v`, `doc`, `deleted` and `x:owner`, then the parked count.
local out = {}
for k = 1, #KEYS, 2 do
  local fields = redis.call('HMGET', KEYS[k], 'v', 'doc', 'deleted', 'x:owner')
  for f = 1, 4 do out[#out + 1] = fields[f] end
  out[#out + 1] = redis.call('HLEN', KEYS[k + 1])
end
return out
