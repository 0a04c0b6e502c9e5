-- Store a campaign's report unless the stored one is as new: check and write in one step, so a
-- redelivered or older completion never replaces a newer report.
-- KEYS[1] the report hash   ARGV[1] version   ARGV[2] owner id   ARGV[3] the report (JSON)
-- Returns 1 if stored, 0 if a report of this version or a newer one was there.
local current = tonumber(redis.call('HGET', KEYS[1], 'version'))
if current and current >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'owner_id', ARGV[2], 'report', ARGV[3])
return 1
