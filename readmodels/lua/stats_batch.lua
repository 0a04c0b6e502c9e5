-- The stats projection (key layout 2): a run of one bucket's events of a batch in one call, in
-- the batch's order (projectors/adapters/stats_projection.py), after lua/stats_state.lua. Each
-- event is held to the version guard every projection keeps (as lua/guard.lua does one event a
-- call): version <= last applied -> 'duplicate', nothing counted; version == last + 1 ->
-- applied, then any parked events that became contiguous; version > last + 1 -> parked beside
-- the state (never applied out of order) until the gap fills.
--
-- The call reads the states it needs with one HMGET a hash, sums the counter moves of all its
-- events and writes each counter field they moved once (HINCRBY), and every state it changed
-- with one HSET a hash: where one event a call (lua/stats.lua under lua/guard.lua) cost an
-- EVALSHA, an HGET, an HSET and two to six HINCRBY an event, each write also appended to the
-- AOF and replayed by replicas. A field whose moves sum to 0 within a call is still written
-- (HINCRBY by 0 makes the field), so which fields exist never depends on how the events were
-- split into calls: a rebuilt generation's digest equals the live one's
-- (projectors/adapters/digest.py). Budget amounts are integer strings of at most 15 digits
-- (events.types.Budget): a sum is kept in a Lua number (a double) only while it is exact, below
-- 2^52, and written out before.
--
-- KEYS[1] counts  KEYS[2] budget  KEYS[3] events per minute  KEYS[4] the bucket's parked set
-- KEYS[5] the bucket's campaign states  KEYS[6] its user states, then the aggregates' parked
--   hashes (version -> MessagePack of notice '', change, parked_at, as lua/guard.lua keeps them;
--   readmodels/parked.py), each once: all of one bucket, so one slot on a cluster.
-- ARGV[1] projected_at (ISO: when an event parked by this call was parked)
-- ARGV[2..] one block per event: its parked hash's position in KEYS, the parked-set member
--   ("type:id"), version, n, then the change's n strings ({field, kind, minute, name, value...}:
--   the aggregate's field in its states hash, its packed id, first; readmodels/stats.py)
-- Returns two entries per event, in order: 'applied', drained | 'duplicate', 0 | 'parked', 0 |
--   'refused', why (nothing of that event counted; the projector dead-letters it).
-- Every read comes before the first write, and the first writes are the entries this call parks
-- (writing them again is harmless): a state or parked hash of another type stops the call before
-- it has counted anything, and the projector then sends its events one a call. (A counter hash
-- of another type would stop it midway, as it stopped a call of one event midway.)
local counts_key, budget_key, per_minute_key, parked_set = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local states_key = {campaign = KEYS[5], user = KEYS[6]}
local projected_at = ARGV[1]

-- Counter moves, summed over the call: field -> delta, and the fields in first-moved order.
local function counter()
  return {deltas = {}, order = {}}
end
local counts, minutes, budget = counter(), counter(), counter()
local function move(into, field, by)
  if into.deltas[field] == nil then
    into.order[#into.order + 1] = field
    into.deltas[field] = 0
  end
  into.deltas[field] = into.deltas[field] + by
end

local EXACT = 4503599627370496 -- 2^52: a sum below it stays exact after adding a 15-digit amount
-- Increments written as they are (an amount longer than 15 digits, a sum taken out before it
-- stops being exact): field, integer string, field, integer string...
local budget_raw = {}
local function move_budget(field, text, sign)
  if #text > 15 then -- not an amount the projector sends: as it is, exactly
    budget_raw[#budget_raw + 1] = field
    budget_raw[#budget_raw + 1] = sign < 0 and negate(text) or text
    return
  end
  move(budget, field, sign * tonumber(text))
  if math.abs(budget.deltas[field]) >= EXACT then
    budget_raw[#budget_raw + 1] = field
    budget_raw[#budget_raw + 1] = string.format('%d', budget.deltas[field])
    budget.deltas[field] = 0
  end
end

-- The events, and the states they need (per kind: fields in first-seen order).
local events = {}
local wanted = {campaign = {}, user = {}}
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  local change = {}
  for k = i + 4, i + 3 + n do change[#change + 1] = ARGV[k] end
  events[#events + 1] = {
    parked = KEYS[tonumber(ARGV[i])], member = ARGV[i + 1], vtext = ARGV[i + 2], change = change,
  }
  local fields = wanted[change[2]]
  if fields and not fields[change[1]] then
    fields[change[1]] = true
    fields[#fields + 1] = change[1]
  end
  i = i + 4 + n
end

-- Each aggregate's state as this call leaves it: read once (one HMGET a hash), written once.
local states = {campaign = {}, user = {}}
for kind, fields in pairs(wanted) do
  if #fields > 0 then
    local raws = redis.call('HMGET', states_key[kind], unpack(fields))
    for n, field in ipairs(fields) do
      local map, last = decode_state(raws[n])
      states[kind][field] = {map = map, last = last, vtext = nil}
    end
  end
end

-- Parked events, per parked hash: those parked by this call (kept here, written at the end),
-- those of Redis drained by it (deleted at the end), whether Redis holds any (asked once, when
-- first needed; for all of the call's at once first: most calls find none).
local none_parked = #KEYS < 7 or redis.call('EXISTS', unpack(KEYS, 7, #KEYS)) == 0
local parks, park_order = {}, {}
local function parked_of(parked, member)
  local park = parks[parked]
  if not park then
    local any = nil
    if none_parked then any = false end
    park = {member = member, new = {}, new_order = {}, drained = {}, any = any}
    parks[parked] = park
    park_order[#park_order + 1] = parked
  end
  return park
end
local function in_redis(park, parked)
  if park.any == nil then park.any = redis.call('EXISTS', parked) == 1 end
  return park.any
end
-- The parked change of `vtext` (nil: none), this call's or Redis's.
local function parked_change(park, parked, vtext)
  local change = park.new[vtext]
  if change then return change end
  if not in_redis(park, parked) then return nil end
  local packed = redis.call('HGET', parked, vtext)
  if not packed then return nil end
  local _, stored = cmsgpack.unpack(packed)
  return stored
end
-- `vtext` was applied from the parked ones: not to be written, and out of Redis at the end
-- (Redis may hold it too: parked by an earlier batch, delivered again and parked by this call).
local function unpark(park, parked, vtext)
  if park.new[vtext] then park.new[vtext] = false end
  if in_redis(park, parked) then park.drained[#park.drained + 1] = vtext end
end

-- Applies one event's change to its state (in memory) and to the counters; an error message,
-- with nothing moved, when the projection refuses it (the text lua/stats.lua refuses with).
local function apply_change(state, member, vtext, change)
  local kind, minute = change[2], change[3]
  if kind == 'campaign' then
    local old, new = state.map, {}
    for name, value in pairs(old) do new[name] = value end
    for n = 4, #change, 2 do new[change[n]] = change[n + 1] end
    if not (new['status'] and new['channel'] and new['currency']) then
      return member .. ' has no creation event before version ' .. vtext
    end
    local moved, old_budget, new_budget = count_moves(old, new)
    for _, m in ipairs(moved) do move(counts, m[1], m[2]) end
    if old_budget then
      move_budget(old_budget[1] .. ':units', old_budget[2], -1)
      move_budget(old_budget[1] .. ':frac', old_budget[3], -1)
    end
    if new_budget then
      move_budget(new_budget[1] .. ':units', new_budget[2], 1)
      move_budget(new_budget[1] .. ':frac', new_budget[3], 1)
    end
    state.map = new
  elseif change[4] == '1' then
    move(counts, 'users.total', 1)
  end
  move(minutes, minute, 1)
  state.vtext = vtext
  state.last = tonumber(vtext)
  return nil
end

local reply = {}
for _, event in ipairs(events) do
  local change, vtext = event.change, event.vtext
  local state = states[change[2]][change[1]]
  local park = parked_of(event.parked, event.member)
  local version = tonumber(vtext)
  if version <= state.last then
    reply[#reply + 1] = 'duplicate'
    reply[#reply + 1] = 0
  elseif version > state.last + 1 then
    if park.new[vtext] == nil then park.new_order[#park.new_order + 1] = vtext end
    park.new[vtext] = change
    reply[#reply + 1] = 'parked'
    reply[#reply + 1] = 0
  else
    local refused = apply_change(state, event.member, vtext, change)
    if refused then
      reply[#reply + 1] = 'refused'
      reply[#reply + 1] = refused
    else
      local drained = 0
      while true do
        local next_text = string.format('%d', state.last + 1)
        local stored = parked_change(park, event.parked, next_text)
        -- A refused parked event stays parked (and visible in the parked set).
        if not stored or apply_change(state, event.member, next_text, stored) then break end
        unpark(park, event.parked, next_text)
        drained = drained + 1
      end
      reply[#reply + 1] = 'applied'
      reply[#reply + 1] = drained
    end
  end
end

-- The writes. Events parked by this call first, then the counters, then the states (what a
-- state says was counted has been), then the parked events this call applied: never deleted
-- before what they moved is written.
for _, parked in ipairs(park_order) do
  local park = parks[parked]
  local entries = {}
  for _, vtext in ipairs(park.new_order) do
    if park.new[vtext] then
      entries[#entries + 1] = vtext
      entries[#entries + 1] = cmsgpack.pack('', park.new[vtext], projected_at)
    end
  end
  if #entries > 0 then
    redis.call('HSET', parked, unpack(entries))
    redis.call('SADD', parked_set, park.member)
  end
end
local function write(into, key)
  for _, field in ipairs(into.order) do
    redis.call('HINCRBY', key, field, string.format('%d', into.deltas[field]))
  end
end
write(counts, counts_key)
for n = 1, #budget_raw, 2 do redis.call('HINCRBY', budget_key, budget_raw[n], budget_raw[n + 1]) end
write(budget, budget_key)
write(minutes, per_minute_key)
for kind, fields in pairs(wanted) do
  local updates = {}
  for _, field in ipairs(fields) do
    local state = states[kind][field]
    if state.vtext then
      updates[#updates + 1] = field
      updates[#updates + 1] = kind == 'campaign' and encode_state(state.vtext, state.map) or state.vtext
    end
  end
  if #updates > 0 then redis.call('HSET', states_key[kind], unpack(updates)) end
end
for _, parked in ipairs(park_order) do
  local park = parks[parked]
  if #park.drained > 0 then
    redis.call('HDEL', parked, unpack(park.drained))
    if redis.call('EXISTS', parked) == 0 then redis.call('SREM', parked_set, park.member) end
  end
end
return reply
