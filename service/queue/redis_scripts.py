"""Lua scripts of the Redis Streams queue: each state change of a job is one atomic script.

Shared pieces (`finish`, `ack`, the final statuses) are prepended to every script. Key prefixes,
the group and the completion channel are substituted in once, from `constants.py`. The scripts
touch keys derived from the job record (the idempotency key) and so assume a single Redis (or a
primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

from string import Template

from . import constants

_PRELUDE = """
local GROUP = '$group'
local CHANNEL = '$channel'
local IDEM_PREFIX = '$idem_prefix'
local FINAL = {done = true, failed = true, expired = true, cancelled = true}

-- XACK + XDEL: the entry leaves the pending list and the stream (trimming by deletion, so
-- an unacknowledged entry is never dropped)
local function ack(stream, msg)
  if msg and msg ~= '' then
    redis.call('XACK', stream, GROUP, msg)
    redis.call('XDEL', stream, msg)
  end
end

-- a final state: record it, keep the record for the result TTL, drop the payload, extend the
-- idempotency key to the same TTL, then tell the waiters
local function finish(job_key, payload_key, status, now, ttl_ms, meta, n_outputs)
  redis.call('HSET', job_key, 'status', status, 'finished_at', now, 'meta', meta,
             'n_outputs', n_outputs)
  redis.call('PEXPIRE', job_key, ttl_ms)
  redis.call('DEL', payload_key)
  local fields = redis.call('HMGET', job_key, 'id', 'idem')
  if fields[2] and fields[2] ~= '' then
    local idem_key = IDEM_PREFIX .. fields[2]
    if redis.call('GET', idem_key) == fields[1] then
      redis.call('PEXPIRE', idem_key, ttl_ms)
    end
  end
  redis.call('PUBLISH', CHANNEL, fields[1])
end
"""

# KEYS: stream, job, [idempotency]  ARGV: job id, max backlog, ttl ms, field, value, ...
# -> {'ok', entry id} | {'dup', job id} | {'full', depth} | {'exists', ''}
ENQUEUE = """
local stream, job_key = KEYS[1], KEYS[2]
local job_id, max_backlog, ttl_ms = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if #KEYS >= 3 then
  local existing = redis.call('GET', KEYS[3])
  if existing and redis.call('EXISTS', '$job_prefix' .. existing) == 1 then
    return {'dup', existing}
  end
end
if redis.call('EXISTS', job_key) == 1 then
  return {'exists', ''}
end
local depth = 0
if redis.call('EXISTS', stream) == 1 then
  depth = redis.call('XLEN', stream)
else
  redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
end
if depth >= max_backlog then
  return {'full', tostring(depth)}
end
redis.call('HSET', job_key, unpack(ARGV, 4))
local msg = redis.call('XADD', stream, '*', 'job', job_id)
redis.call('HSET', job_key, 'msg', msg)
redis.call('PEXPIRE', job_key, ttl_ms)
if #KEYS >= 3 then
  redis.call('SET', KEYS[3], job_id, 'PX', ttl_ms)
end
return {'ok', msg}
"""

# KEYS: stream, job, payload  ARGV: entry id, consumer, now, ttl ms, deliveries, expired meta
# -> 'running' | 'gone' | 'expired' | the final status it already had
BEGIN = """
local stream, job_key, payload_key = KEYS[1], KEYS[2], KEYS[3]
local msg, consumer, now, ttl_ms, deliveries = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local job = redis.call('HMGET', job_key, 'status', 'deadline')
if not job[1] then
  ack(stream, msg)
  return 'gone'
end
if FINAL[job[1]] then
  ack(stream, msg)
  return job[1]
end
if tonumber(job[2]) < tonumber(now) then
  finish(job_key, payload_key, 'expired', now, ttl_ms, ARGV[6], 0)
  ack(stream, msg)
  return 'expired'
end
redis.call('HSET', job_key, 'status', 'running', 'started_at', now, 'worker', consumer,
           'attempts', deliveries)
return 'running'
"""

# KEYS: stream, job, payload, result, staging  ARGV: entry id, status, now, ttl ms, meta, n
# -> 1 stored | 0 the job had ended already (or is gone) | -1 staged outputs missing
COMPLETE = """
local stream, job_key, payload_key = KEYS[1], KEYS[2], KEYS[3]
local result_key, staging = KEYS[4], KEYS[5]
local msg, status, now, ttl_ms, meta, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local current = redis.call('HGET', job_key, 'status')
if (not current) or FINAL[current] then
  redis.call('DEL', staging)
  ack(stream, msg)
  return 0
end
if tonumber(n) > 0 then
  if redis.call('EXISTS', staging) == 0 then
    return -1
  end
  redis.call('RENAME', staging, result_key)
  redis.call('PEXPIRE', result_key, ttl_ms)
else
  redis.call('DEL', result_key)
end
finish(job_key, payload_key, status, now, ttl_ms, meta, n)
ack(stream, msg)
return 1
"""

# KEYS: stream, job, payload, dead-letter stream
# ARGV: entry id, job id, consumer, now, ttl ms, deliveries, reason, failed meta, maxlen
DEAD_LETTER = """
local stream, job_key, payload_key, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local msg, job_id, consumer, now, ttl_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local job = redis.call('HMGET', job_key, 'status', 'kind')
redis.call('XADD', dead, 'MAXLEN', '~', ARGV[9], '*', 'job', job_id, 'kind', job[2] or '',
           'entry', msg, 'deliveries', ARGV[6], 'reason', ARGV[7], 'failed_at', now,
           'consumer', consumer)
if job[1] and not FINAL[job[1]] then
  finish(job_key, payload_key, 'failed', now, ttl_ms, ARGV[8], 0)
end
ack(stream, msg)
return 1
"""

# KEYS: stream, job, payload  ARGV: now, ttl ms, cancelled meta, expired meta
# -> 1 cancelled now | 0 not queued (unknown, running, finished; past its deadline: it ends
#    expired instead)
CANCEL = """
local stream, job_key, payload_key = KEYS[1], KEYS[2], KEYS[3]
local now, ttl_ms = ARGV[1], ARGV[2]
local job = redis.call('HMGET', job_key, 'status', 'deadline', 'msg')
if job[1] ~= 'queued' then
  return 0
end
if tonumber(job[2]) < tonumber(now) then
  finish(job_key, payload_key, 'expired', now, ttl_ms, ARGV[4], 0)
  ack(stream, job[3])
  return 0
end
finish(job_key, payload_key, 'cancelled', now, ttl_ms, ARGV[3], 0)
ack(stream, job[3])
return 1
"""

# KEYS: stream, job  ARGV: entry id, consumer, idle ms
# Back to queued and immediately reclaimable, if this consumer still owns the entry.
RELEASE = """
local stream, job_key = KEYS[1], KEYS[2]
local msg, consumer, idle_ms = ARGV[1], ARGV[2], ARGV[3]
local pending = redis.call('XPENDING', stream, GROUP, msg, msg, 1)
if not pending[1] or pending[1][2] ~= consumer then
  return 0
end
redis.call('XCLAIM', stream, GROUP, consumer, 0, msg, 'IDLE', idle_ms, 'JUSTID')
local job = redis.call('HMGET', job_key, 'status', 'worker')
if job[1] == 'running' and job[2] == consumer then
  redis.call('HSET', job_key, 'status', 'queued')
end
return 1
"""

# KEYS: job  ARGV: attempt, "done/total"
# -> 'ok' | 'cancel' (recorded; a cancel was requested) | 'superseded' (not running this attempt)
PROGRESS = """
local job = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'cancel')
if job[1] ~= 'running' or job[2] ~= ARGV[1] then
  return 'superseded'
end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
if job[3] and job[3] ~= '' then
  return 'cancel'
end
return 'ok'
"""

# KEYS: job  -> 1 the running job is asked to stop | 0 not running
REQUEST_CANCEL = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 1
"""

# KEYS: stream  ARGV: consumer, entry id, ...
# Lease extension: reset the idle time of the entries this consumer still owns (JUSTID: the
# delivery count stays). An entry another worker reclaimed meanwhile is left alone.
TOUCH = """
local stream, consumer = KEYS[1], ARGV[1]
local touched = 0
for i = 2, #ARGV do
  local pending = redis.call('XPENDING', stream, GROUP, ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == consumer then
    redis.call('XCLAIM', stream, GROUP, consumer, 0, ARGV[i], 'JUSTID')
    touched = touched + 1
  end
end
return touched
"""


def _render(body: str) -> str:
    return Template(_PRELUDE + body).substitute(
        group=constants.GROUP_NAME,
        channel=constants.DONE_CHANNEL,
        idem_prefix=constants.IDEMPOTENCY_KEY_PREFIX,
        job_prefix=constants.JOB_KEY_PREFIX,
    )


SCRIPTS: dict[str, str] = {
    name: _render(body)
    for name, body in {
        "enqueue": ENQUEUE,
        "begin": BEGIN,
        "complete": COMPLETE,
        "dead_letter": DEAD_LETTER,
        "cancel": CANCEL,
        "release": RELEASE,
        "touch": TOUCH,
        "progress": PROGRESS,
        "request_cancel": REQUEST_CANCEL,
    }.items()
}
