//! The Lua scripts that keep the cluster-wide channel and presence state (see [`super::state`]
//! for the key layout). Every script takes the key prefix `{cluster}:st:` as `ARGV[1]` and
//! builds its keys from it (the cluster runs on one Redis, not a Redis Cluster).

/// Lua defining `pending(member)`, for the scripts that vacate channels or remove members
/// (needs locals `p`, `app` and `delay`, the vacate delay in ms, 0: none): with a delay,
/// records `member` (a channel, or `"channel\nuser"`) in `P:st:vacating:{app}` due after the
/// delay by Redis's clock, lists the app in the ZSET `P:st:vacating-apps` scored by its earliest
/// due time, and answers 2 (the webhook is pending: [`VACATE_DUE`] fires it unless a comeback
/// cancels it); without, or when the app has [`super::vacate::PENDING_PER_APP`] entries pending
/// already (10,000: the bound of an app's pending set), answers 1 (fire it now, undelayed).
/// Also `comeback(member)`: takes a pending entry out, answering whether there was one (the
/// channel or member came back within the delay: no webhook for either transition).
macro_rules! pending_lua {
    () => {
        r"
local due = 0
if delay > 0 then
  local t = redis.call('TIME')
  due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + delay
end
local function pending(member)
  if delay <= 0 then return 1 end
  local key = p .. 'vacating:' .. app
  if not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= 10000 then
    return 1
  end
  redis.call('ZADD', key, due, member)
  -- Bounded in time: with no node left to sweep it, the set goes 10 minutes after its last
  -- entry (such late webhooks would mislead more than they tell).
  redis.call('PEXPIRE', key, delay + 600000)
  local apps = p .. 'vacating-apps'
  local first = redis.call('ZSCORE', apps, app)
  if not first or tonumber(first) > due then redis.call('ZADD', apps, due, app) end
  if redis.call('PTTL', apps) < delay + 600000 then redis.call('PEXPIRE', apps, delay + 600000) end
  return 2
end
local function comeback(member)
  return redis.call('ZREM', p .. 'vacating:' .. app, member) == 1
end
"
    };
}

/// A subscribe. ARGV: prefix, app, tag, channel, user id (`""`: not presence), user_info JSON
/// (`""`: none), the member limit (0: none). Answers `{-1, max}` when the presence channel is
/// full (nothing changed), else `{occupied, added, subscriptions, members}` where `occupied` /
/// `added` are 1 on the channel's first subscription / the user's first socket cluster-wide,
/// and `members` is the flat `user, info` list of a presence channel (empty otherwise).
/// `occupied` / `added` are 2 instead for a comeback: the channel / member was pending in
/// `P:st:vacating:{app}` (left within the vacate delay); the pending entry is removed and no
/// webhook is due for either (the frames to clients still go).
pub(super) const JOIN: &str = r"
local p, app, tag, ch, user, info = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local max = tonumber(ARGV[7])
local added = 0
local members = {}
if user ~= '' then
  local pm = p .. 'pm:' .. app .. ':' .. ch
  local pi = p .. 'pi:' .. app .. ':' .. ch
  if redis.call('HEXISTS', pm, user) == 0 and max > 0 and redis.call('HLEN', pm) >= max then
    return {-1, max}
  end
  if redis.call('HINCRBY', pm, user, 1) == 1 then
    added = 1
    redis.call('HSET', pi, user, info)
    if redis.call('ZREM', p .. 'vacating:' .. app, ch .. '\n' .. user) == 1 then added = 2 end
  end
  redis.call('HINCRBY', p .. 'pn:' .. app .. ':' .. tag, ch .. '\n' .. user, 1)
  members = redis.call('HGETALL', pi)
end
redis.call('HINCRBY', p .. 'ch:' .. app .. ':' .. tag, ch, 1)
local total = redis.call('HINCRBY', p .. 'occ:' .. app, ch, 1)
redis.call('SADD', p .. 'apps:' .. tag, app)
redis.call('SADD', p .. 'nodes', tag)
local occupied = 0
if total == 1 then
  occupied = 1
  if redis.call('ZREM', p .. 'vacating:' .. app, ch) == 1 then occupied = 2 end
end
return {occupied, added, total, members}
";

/// An unsubscribe (or a disconnect's). ARGV: prefix, app, tag, channel, user id (`""`: not
/// presence). Acts only if this node still holds a subscription of the channel (it may have
/// been cleaned up as a dead node's, or re-registered since). ARGV[6]: the vacate delay in ms
/// (0: none). Answers `{vacated, removed, subscriptions}`; with a delay, a vacated channel or
/// removed member is 2 instead of 1: its webhook is pending in `P:st:vacating:{app}` (member
/// the channel, or `"channel\nuser"`; score: due time in ms by Redis's clock), and the app is
/// in `P:st:vacating-apps`; a comeback ([`JOIN`]) cancels it, else [`VACATE_DUE`] fires it.
/// ARGV[7] (optional): the prefix of the cache-miss report keys; a vacated channel's is removed
/// (its next miss is reported again).
pub(super) const LEAVE: &str = concat!(
    r"
local p, app, tag, ch, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local delay = tonumber(ARGV[6] or '0')
",
    pending_lua!(),
    r"
local nodech = p .. 'ch:' .. app .. ':' .. tag
local mine = tonumber(redis.call('HGET', nodech, ch) or '0')
if mine <= 0 then return {0, 0, -1} end
if mine == 1 then redis.call('HDEL', nodech, ch) else redis.call('HINCRBY', nodech, ch, -1) end
local occ = p .. 'occ:' .. app
local total = redis.call('HINCRBY', occ, ch, -1)
local vacated = 0
if total <= 0 then
  redis.call('HDEL', occ, ch)
  if ARGV[7] then redis.call('DEL', ARGV[7] .. ch) end
  vacated = pending(ch)
  total = 0
end
local removed = 0
if user ~= '' then
  local pn = p .. 'pn:' .. app .. ':' .. tag
  local field = ch .. '\n' .. user
  local sockets = tonumber(redis.call('HGET', pn, field) or '0')
  if sockets > 0 then
    if sockets == 1 then redis.call('HDEL', pn, field) else redis.call('HINCRBY', pn, field, -1) end
    local pm = p .. 'pm:' .. app .. ':' .. ch
    if redis.call('HINCRBY', pm, user, -1) <= 0 then
      redis.call('HDEL', pm, user)
      redis.call('HDEL', p .. 'pi:' .. app .. ':' .. ch, user)
      removed = pending(ch .. '\n' .. user)
    end
  end
end
return {vacated, removed, total}
"
);

/// The dead-node sweep's claim. ARGV: prefix, the tag key prefix (`{cluster}:socket-tag:`),
/// this node's tag. Moves every tag of `P:st:nodes` whose tag key is gone (its node died, or
/// stopped) into `P:st:dead` (atomic: a tag moves once), and answers every tag in `P:st:dead`
/// (those whose cleanup is not finished, by anyone). A tag whose key is back (its node was cut
/// off from Redis for a TTL, not dead) leaves `P:st:dead` uncleaned: that node found its key
/// gone and re-registers its whole state itself, which settles what was cleaned already.
pub(super) const CLAIM: &str = r"
local p, tags, me = ARGV[1], ARGV[2], ARGV[3]
for _, tag in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if tag ~= me and redis.call('EXISTS', tags .. tag) == 0 then
    redis.call('SREM', p .. 'nodes', tag)
    redis.call('SADD', p .. 'dead', tag)
  end
end
local dead = redis.call('SMEMBERS', p .. 'dead')
for i, tag in ipairs(dead) do
  if redis.call('EXISTS', tags .. tag) == 1 then
    redis.call('SREM', p .. 'dead', tag)
    redis.call('SADD', p .. 'nodes', tag)
    dead[i] = ''
  elseif redis.call('SCARD', p .. 'apps:' .. tag) == 0 then
    redis.call('SREM', p .. 'dead', tag)
    dead[i] = ''
  end
end
return dead
";

/// Cleans dead node `tag`'s state of one app. ARGV: prefix, app, tag, the vacate delay in ms
/// (0: none). Idempotent and done once: it acts only if it removed the app from the node's set
/// (the caller that did fires what it answers). Answers `{vacated, removed, held}`: the
/// channels vacated whose webhook is due now, the members removed as `channel, user, hook`
/// triples (the frames go at once; `hook` 1: the webhook too, 0: it is pending), and how many
/// vacated channels' webhooks are pending. With a delay, the webhooks wait in
/// `P:st:vacating:{app}` like a leave's ([`LEAVE`]): a client of the dead node coming back on
/// another node within the delay cancels them.
pub(super) const CLEANUP: &str = concat!(
    r"
local p, app, tag = ARGV[1], ARGV[2], ARGV[3]
local delay = tonumber(ARGV[4] or '0')
if redis.call('SREM', p .. 'apps:' .. tag, app) == 0 then return {{}, {}, 0} end
",
    pending_lua!(),
    r"
local vacated, removed, held = {}, {}, 0
local occ = p .. 'occ:' .. app
local nodech = p .. 'ch:' .. app .. ':' .. tag
local fields = redis.call('HGETALL', nodech)
for i = 1, #fields, 2 do
  local ch, n = fields[i], tonumber(fields[i + 1])
  if redis.call('HINCRBY', occ, ch, -n) <= 0 then
    redis.call('HDEL', occ, ch)
    if pending(ch) == 1 then table.insert(vacated, ch) else held = held + 1 end
  end
end
redis.call('DEL', nodech)
local pn = p .. 'pn:' .. app .. ':' .. tag
fields = redis.call('HGETALL', pn)
for i = 1, #fields, 2 do
  local field, n = fields[i], tonumber(fields[i + 1])
  local nl = string.find(field, '\n', 1, true)
  if nl then
    local ch, user = string.sub(field, 1, nl - 1), string.sub(field, nl + 1)
    local pm = p .. 'pm:' .. app .. ':' .. ch
    if redis.call('HINCRBY', pm, user, -n) <= 0 then
      redis.call('HDEL', pm, user)
      redis.call('HDEL', p .. 'pi:' .. app .. ':' .. ch, user)
      table.insert(removed, ch)
      table.insert(removed, user)
      table.insert(removed, pending(field) == 1 and 1 or 0)
    end
  end
end
redis.call('DEL', pn)
return {vacated, removed, held}
"
);

/// Re-registers this node's whole state of one app (after Redis lost it, the node was taken
/// for dead, or changes were lost while Redis was unreachable). ARGV: prefix, app, tag, the
/// number `n` of channels, the number `m` of presence entries, the vacate delay in ms (0:
/// none), then `n` pairs `channel, subscriptions`, then `m` quadruples `channel, user, sockets,
/// info`. Idempotent: replaces this node's hashes, applies the differences to the totals, and
/// answers the transitions `{occupied, vacated, added (channel, user, info, hook quadruples),
/// removed (channel, user, hook triples)}`. Like a join and a leave: a channel or member back
/// within the vacate delay cancels its pending entry and is no webhook (`occupied` leaves it
/// out; `hook` 0: the `member_added` frames still go), and with a delay a vacate or removal is
/// recorded pending ([`LEAVE`]; `vacated` leaves it out, `hook` 0 for a removed member).
pub(super) const RESYNC: &str = concat!(
    r"
local p, app, tag = ARGV[1], ARGV[2], ARGV[3]
local n, m = tonumber(ARGV[4]), tonumber(ARGV[5])
local delay = tonumber(ARGV[6])
",
    pending_lua!(),
    r"
local occupied, vacated, added, removed = {}, {}, {}, {}
local occ = p .. 'occ:' .. app
local nodech = p .. 'ch:' .. app .. ':' .. tag
local old, new = {}, {}
local fields = redis.call('HGETALL', nodech)
for i = 1, #fields, 2 do old[fields[i]] = tonumber(fields[i + 1]) end
local i = 7
for _ = 1, n do
  new[ARGV[i]] = tonumber(ARGV[i + 1])
  i = i + 2
end
local function apply(ch, d)
  if d == 0 then return end
  local total = redis.call('HINCRBY', occ, ch, d)
  local before = total - d
  if total <= 0 then
    redis.call('HDEL', occ, ch)
    if before > 0 and pending(ch) == 1 then table.insert(vacated, ch) end
  elseif before <= 0 and not comeback(ch) then
    table.insert(occupied, ch)
  end
end
for ch, c in pairs(new) do apply(ch, c - (old[ch] or 0)) end
for ch, c in pairs(old) do
  if new[ch] == nil then apply(ch, -c) end
end
redis.call('DEL', nodech)
for ch, c in pairs(new) do redis.call('HSET', nodech, ch, c) end
local pn = p .. 'pn:' .. app .. ':' .. tag
local oldp, newp, infos = {}, {}, {}
fields = redis.call('HGETALL', pn)
for j = 1, #fields, 2 do oldp[fields[j]] = tonumber(fields[j + 1]) end
for _ = 1, m do
  local field = ARGV[i] .. '\n' .. ARGV[i + 1]
  newp[field] = tonumber(ARGV[i + 2])
  infos[field] = ARGV[i + 3]
  i = i + 4
end
local function applyp(field, d)
  if d == 0 then return end
  local nl = string.find(field, '\n', 1, true)
  if not nl then return end
  local ch, user = string.sub(field, 1, nl - 1), string.sub(field, nl + 1)
  local pm = p .. 'pm:' .. app .. ':' .. ch
  local pi = p .. 'pi:' .. app .. ':' .. ch
  local total = redis.call('HINCRBY', pm, user, d)
  local before = total - d
  if total <= 0 then
    redis.call('HDEL', pm, user)
    redis.call('HDEL', pi, user)
    if before > 0 then
      table.insert(removed, ch)
      table.insert(removed, user)
      table.insert(removed, pending(field) == 1 and 1 or 0)
    end
  elseif before <= 0 then
    local info = infos[field] or ''
    redis.call('HSET', pi, user, info)
    table.insert(added, ch)
    table.insert(added, user)
    table.insert(added, info)
    table.insert(added, comeback(field) and 0 or 1)
  end
end
for field, c in pairs(newp) do applyp(field, c - (oldp[field] or 0)) end
for field, c in pairs(oldp) do
  if newp[field] == nil then applyp(field, -c) end
end
redis.call('DEL', pn)
for field, c in pairs(newp) do redis.call('HSET', pn, field, c) end
if n > 0 then
  redis.call('SADD', p .. 'apps:' .. tag, app)
else
  redis.call('SREM', p .. 'apps:' .. tag, app)
end
redis.call('SADD', p .. 'nodes', tag)
return {occupied, vacated, added, removed}
"
);

/// Leases the due pending vacates (see [`LEAVE`]) to the caller: atomic, so each is taken by
/// one node at a time. ARGV: prefix, the most entries to take per app, the most apps to look
/// at, the lease in ms. The apps looked at are those of `P:st:vacating-apps` due now, oldest
/// first (each app takes at most its share, so no app waits on another for long); each is
/// scored again with its new earliest due time (over its pending and leased entries), or
/// leaves the set when it has none. A due entry moves from `P:st:vacating:{app}` to
/// `P:st:vacate-lease:{app}`, scored with the lease's end (Redis's clock); a leased entry whose
/// lease ran out (its node did not confirm: it died, or the answer was lost) is due again, and
/// is taken first, unless the same channel or member is pending again (vacated anew since):
/// the old lease is then dropped, the newer entry fires or is cancelled by a comeback. A join
/// does not see leased entries (the vacate is being fired: a comeback now is a new
/// `channel_occupied` / `member_added`). Entries no longer vacant (a channel someone subscribes
/// to, a member with a socket) are dropped. Answers `{lease end, more, app, entry, app, entry,
/// ...}` (`more` 1: some app had more due than its share, or more apps were due than looked at:
/// run again) for the caller to fire `channel_vacated` / `member_removed` and then confirm with
/// [`VACATE_ACK`].
pub(super) const VACATE_DUE: &str = r"
local p, share, most, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ends = now + lease
local out = {ends, 0}
local more = 0
local apps = p .. 'vacating-apps'
local function vacant(app, entry)
  local nl = string.find(entry, '\n', 1, true)
  if nl then
    local ch, user = string.sub(entry, 1, nl - 1), string.sub(entry, nl + 1)
    return redis.call('HEXISTS', p .. 'pm:' .. app .. ':' .. ch, user) == 0
  end
  return redis.call('HEXISTS', p .. 'occ:' .. app, entry) == 0
end
local picked = redis.call('ZRANGEBYSCORE', apps, '-inf', now, 'LIMIT', 0, most)
if #picked >= most then more = 1 end
for _, app in ipairs(picked) do
  local key = p .. 'vacating:' .. app
  local leased = p .. 'vacate-lease:' .. app
  local left = share
  for _, from in ipairs({leased, key}) do
    local due = {}
    if left > 0 then due = redis.call('ZRANGEBYSCORE', from, '-inf', now, 'LIMIT', 0, left) end
    for _, entry in ipairs(due) do
      left = left - 1
      redis.call('ZREM', from, entry)
      -- A run-out lease of an entry pending again: dropped (the newer one fires, or its
      -- comeback cancels it). CH: 0 when this run leased the entry already: one webhook.
      local again = from == leased and redis.call('ZSCORE', key, entry)
      if not again and vacant(app, entry)
        and redis.call('ZADD', leased, 'CH', ends, entry) == 1 then
        table.insert(out, app)
        table.insert(out, entry)
      end
    end
  end
  if left <= 0 then more = 1 end
  local first = nil
  for _, from in ipairs({leased, key}) do
    local head = redis.call('ZRANGE', from, 0, 0, 'WITHSCORES')
    if head[2] and (not first or tonumber(head[2]) < first) then first = tonumber(head[2]) end
  end
  if first then redis.call('ZADD', apps, first, app) else redis.call('ZREM', apps, app) end
  if redis.call('ZCARD', leased) > 0 then
    redis.call('PEXPIRE', leased, lease + 600000)
  end
end
-- Never shortened: it outlives every app key it lists (a pending one's TTL may be longer).
local ttl = redis.call('PTTL', apps)
if ttl ~= -2 and ttl < lease + 600000 then redis.call('PEXPIRE', apps, lease + 600000) end
out[2] = more
return out
";

/// Renews leased vacates ([`VACATE_DUE`]) whose webhooks the caller is still waiting to see
/// written (their writer is behind): ARGV: prefix, the lease end it holds them with, the lease
/// in ms, then `app, entry` pairs. Moves each entry's lease end to now + the lease only if it
/// still holds that lease. Answers `{new end, app, entry, ...}`: the entries it renewed (the
/// others were taken by another node after the lease ran out).
pub(super) const VACATE_RENEW: &str = r"
local p, ends, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local renewed = now + lease
local out = {renewed}
for i = 4, #ARGV - 1, 2 do
  local app, entry = ARGV[i], ARGV[i + 1]
  local leased = p .. 'vacate-lease:' .. app
  local score = redis.call('ZSCORE', leased, entry)
  if score and tonumber(score) == ends then
    redis.call('ZADD', leased, renewed, entry)
    redis.call('PEXPIRE', leased, lease + 600000)
    table.insert(out, app)
    table.insert(out, entry)
  end
end
return out
";

/// Confirms leased vacates ([`VACATE_DUE`]) whose webhooks the caller has written. ARGV:
/// prefix, the lease end it was answered, then `app, entry` pairs. Removes each entry only if
/// it still holds that lease (after it ran out, another node may have leased it again); an app
/// left with nothing pending or leased leaves `P:st:vacating-apps`. Answers how many it removed.
pub(super) const VACATE_ACK: &str = r"
local p, ends = ARGV[1], tonumber(ARGV[2])
local removed = 0
for i = 3, #ARGV - 1, 2 do
  local app, entry = ARGV[i], ARGV[i + 1]
  local leased = p .. 'vacate-lease:' .. app
  local score = redis.call('ZSCORE', leased, entry)
  if score and tonumber(score) == ends then
    redis.call('ZREM', leased, entry)
    removed = removed + 1
    if redis.call('ZCARD', leased) == 0 and redis.call('ZCARD', p .. 'vacating:' .. app) == 0 then
      redis.call('ZREM', p .. 'vacating-apps', app)
    end
  end
end
return removed
";
