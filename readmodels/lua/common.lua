-- Helpers shared by the projection scripts.
local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  local map = {}
  for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return map
end

-- A JSON object from fragments stored under `prefix .. name`, in the order of `fields`;
-- `version` is the bare number being applied. Missing fields are left out.
local function assemble(fields, map, prefix, vtext)
  local parts = {}
  for _, name in ipairs(fields) do
    local value
    if name == 'version' then value = vtext else value = map[prefix .. name] end
    if value then parts[#parts + 1] = '"' .. name .. '":' .. value end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end
