-- The stats projection's states (key layout 2) one event a call, after lua/stats_counters.lua
-- (the projector's fallback for a call of lua/stats_batch.lua refused as a whole).
-- KEYS[1] is the bucket's hash of campaign or user states; the change is {field, kind, minute,
-- name, value...}: the aggregate's field in it (its packed id), then what the event sets. The
-- state's text is lua/stats_state.lua's `encode_state`.

-- The field last read or written, so the guard's read serves the apply's too.
local known_field, known_raw = nil, nil
local function read_state(key, field)
  if field ~= known_field then
    known_field, known_raw = field, redis.call('HGET', key, field)
  end
  return known_raw
end

local function applied_version(key, change)
  local raw = read_state(key, change[1])
  if not raw then return 0 end
  local stop = string.find(raw, '|', 1, true)
  return tonumber(stop and string.sub(raw, 1, stop - 1) or raw)
end

local function apply_change(key, vtext, change)
  local field, kind, minute = change[1], change[2], change[3]
  if kind == 'campaign' then
    local state = decode_state(read_state(key, field))
    local new = {}
    for name, value in pairs(state) do new[name] = value end
    for i = 4, #change, 2 do new[change[i]] = change[i + 1] end
    if not (new['status'] and new['channel'] and new['currency']) then
      return ARGV[3] .. ' has no creation event before version ' .. vtext
    end
    move_counters(state, new)
    known_raw = encode_state(vtext, new)
  else
    if change[4] == '1' then redis.call('HINCRBY', counts_key, 'users.total', 1) end
    known_raw = vtext
  end
  redis.call('HSET', key, field, known_raw)
  redis.call('HINCRBY', per_minute_key, minute, 1)
  return nil
end
