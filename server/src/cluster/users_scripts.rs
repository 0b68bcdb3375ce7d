//! The Lua scripts of the cluster-wide signed-in users ([`super::users`]).

/// Lua shared by the scripts: moves user `user`'s cluster-wide total (hash `total`) by `d` and
/// publishes the transition, if any, on `channel` (a kind 5 message: `H`, 5, online, user id).
pub(super) const CHANGE: &str = r"
local function change(total, channel, user, d)
  local t = redis.call('HINCRBY', total, user, d)
  if t <= 0 then
    redis.call('HDEL', total, user)
    if t - d > 0 then
      redis.call('PUBLISH', channel, string.char(72, 5, 0) .. user)
    end
  elseif t - d <= 0 then
    redis.call('PUBLISH', channel, string.char(72, 5, 1) .. user)
  end
end
";

/// A signin. KEYS: the app's totals, this node's hash of the app, this node's app set, the node
/// set, this node's tag key. ARGV: the app's Redis channel, the app id, this node's tag, the
/// user, then the watchlist ids. Answers `{1, online...}` (1 or 0 per watchlist id, in order),
/// or `{0}` when this node's tag key is gone (nothing is changed: the node registers again).
pub(super) const SIGN_IN: &str = r"
if redis.call('EXISTS', KEYS[5]) == 0 then return {0} end
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
change(KEYS[1], ARGV[1], ARGV[4], 1)
local answer = {1}
for i = 5, #ARGV do
  answer[#answer + 1] = redis.call('HEXISTS', KEYS[1], ARGV[i])
end
return answer
";

/// A sign-out. KEYS: the app's totals, this node's hash of the app, this node's tag key. ARGV:
/// the app's Redis channel, the user. Answers 1, or 0 when this node's tag key is gone.
pub(super) const SIGN_OUT: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if n <= 0 then return 1 end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
change(KEYS[1], ARGV[1], ARGV[2], -1)
return 1
";

/// Registers this node's users of one app again: its hash becomes exactly the given counts and
/// the totals move by the difference. KEYS: the app's totals, this node's hash of the app, this
/// node's app set, the node set, this node's tag key. ARGV: the app's Redis channel, the app
/// id, this node's tag, then user, count pairs. Answers 1, or 0 when this node's tag key is
/// gone (nothing is changed): the heartbeat owns that key (it is set on the heartbeat's and
/// slots' connection, ordered with the graceful leave), so a registration landing after the
/// node left cannot bring it back to life; the node tries again once the heartbeat set it.
pub(super) const REREGISTER: &str = r"
if redis.call('EXISTS', KEYS[5]) == 0 then return 0 end
local before = {}
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do before[held[i]] = tonumber(held[i + 1]) end
redis.call('DEL', KEYS[2])
local any = false
for i = 4, #ARGV, 2 do
  local user, n = ARGV[i], tonumber(ARGV[i + 1])
  if n > 0 then
    redis.call('HSET', KEYS[2], user, n)
    any = true
  end
  local d = n - (before[user] or 0)
  before[user] = nil
  if d ~= 0 then change(KEYS[1], ARGV[1], user, d) end
end
for user, n in pairs(before) do
  if n ~= 0 then change(KEYS[1], ARGV[1], user, -n) end
end
if any then
  redis.call('SADD', KEYS[3], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[3])
else
  redis.call('SREM', KEYS[3], ARGV[2])
end
return 1
";

/// Claims the cleanup of dead tag `ARGV[2]`. KEYS: the claims hash. ARGV: the tag key prefix,
/// the dead tag, this node's tag. Answers 1 when this node holds the claim (taken now, or held
/// already), 0 when the tag is alive or a live node holds the claim.
pub(super) const CLAIM: &str = r"
if redis.call('EXISTS', ARGV[1] .. ARGV[2]) == 1 then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 0
end
local holder = redis.call('HGET', KEYS[1], ARGV[2])
if holder and holder ~= ARGV[3] and redis.call('EXISTS', ARGV[1] .. holder) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
";

/// Removes a dead node's users of one app (idempotent). KEYS: the app's totals, the dead node's
/// hash of the app, its app set, its tag key. ARGV: the app's Redis channel, the app id.
/// Answers the users whose count moved, or -1 when the node is alive again (nothing changed).
pub(super) const CLEANUP: &str = r"
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local n = tonumber(held[i + 1])
  if n ~= 0 then change(KEYS[1], ARGV[1], held[i], -n) end
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[2])
return #held / 2
";

/// Forgets a dead node once its users are gone. KEYS: its app set, the node set, the claims
/// hash, its tag key. ARGV: its tag. Answers 1 when forgotten, 0 when not (yet).
pub(super) const FINISH: &str = r"
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
";
