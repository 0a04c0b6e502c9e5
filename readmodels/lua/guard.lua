-- The version guard every projection shares, appended after the projection's `apply_change`.
-- One call = one event, atomically: check the aggregate's last applied version, apply the change,
-- record the version, announce it; then apply any parked events that have become contiguous.
--
-- The projection defines `applied_version(key, change)` (the last version applied, 0 for none)
-- and `apply_change(key, vtext, change)`, which records `vtext` as applied with its change.
--
-- KEYS[1] the aggregate's state (a hash of its own, or its bucket's hash of states)
-- KEYS[2] the aggregate's parked hash (version -> packed notice, {change...}, parked_at; see
--         readmodels/parked.py, which reads it for the console)
-- KEYS[3] the generation's parked set    KEYS[4..] the projection's own keys (see its script),
--   then, when announcing, the aggregate's bucket's announcement channel (a shard channel: on a
--   cluster it must be in this call's slot, so it is declared like a key)
-- ARGV[1] position in KEYS of the announcement channel ('' = announce nothing)
-- ARGV[2] projected_at (ISO)
-- ARGV[3] member of the parked set ("type:id")      ARGV[4] the event's version
-- ARGV[5] notice: a JSON object without its closing brace ('' = none)
-- ARGV[6..] the projection's change
-- Returns {outcome, drained}: outcome is 'applied', 'duplicate' or 'parked'; or an error reply
-- (nothing written) when the projection refuses the change.
local state, parked, parked_set = KEYS[1], KEYS[2], KEYS[3]
local projected_at, parked_member = ARGV[2], ARGV[3]
local channel = ARGV[1] ~= '' and KEYS[tonumber(ARGV[1])] or nil
local version = tonumber(ARGV[4])

-- `apply_change` returns an error message, without having written anything, when it refuses.
local function apply_one(vtext, notice, change)
  local refused = apply_change(state, vtext, change)
  if refused then return refused end
  if channel and notice ~= '' then
    redis.call('SPUBLISH', channel, notice .. ',"projected_at":"' .. projected_at .. '"}')
  end
  return nil
end

local change = {}
for i = 6, #ARGV do change[#change + 1] = ARGV[i] end

local last = applied_version(state, change)
if version <= last then
  return {'duplicate', 0}
end

if version > last + 1 then
  -- A gap: never applied out of order. Kept here (so the offset can be committed) until the
  -- missing version arrives; then the loop below applies it. projected_at is when it was parked.
  redis.call('HSET', parked, ARGV[4], cmsgpack.pack(ARGV[5], change, projected_at))
  redis.call('SADD', parked_set, parked_member)
  return {'parked', 0}
end

local refused = apply_one(ARGV[4], ARGV[5], change)
if refused then return redis.error_reply(refused) end

local drained = 0
local next_version = version + 1
while true do
  local key = string.format('%d', next_version)
  local packed = redis.call('HGET', parked, key)
  if not packed then break end
  local notice, stored = cmsgpack.unpack(packed)
  -- A refused parked event stays parked (and visible in the parked set).
  if apply_one(key, notice, stored) then break end
  redis.call('HDEL', parked, key)
  drained = drained + 1
  next_version = next_version + 1
end
if drained > 0 and redis.call('EXISTS', parked) == 0 then
  redis.call('SREM', parked_set, parked_member)
end
return {'applied', drained}
