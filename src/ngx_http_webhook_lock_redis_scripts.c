
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <openssl/sha.h>

#include "ngx_http_webhook_lock_redis_scripts.h"


static ngx_http_webhook_lock_ticket_t *ngx_http_webhook_lock_script_alloc(
    ngx_http_webhook_lock_command_e command, int argc, ngx_str_t *keys,
    ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token,
    u_char **p);
static u_char *ngx_http_webhook_lock_script_keys(
    ngx_http_webhook_lock_ticket_t *t, ngx_http_webhook_lock_script_t *s,
    ngx_uint_t queue, int *n, u_char *p);
static ngx_inline void ngx_http_webhook_lock_script_arg(
    ngx_http_webhook_lock_ticket_t *t, int n, const void *data, size_t len);
static u_char *ngx_http_webhook_lock_script_number(
    ngx_http_webhook_lock_ticket_t *t, int n, u_char *p, ngx_uint_t value);
static void ngx_http_webhook_lock_script_reply(redisAsyncContext *ac,
    void *r, void *privdata);


/*
 * What Redis sees.  One key: SET key token NX PX ttl.  Several keys (the
 * senders of one body) go through the acquire script, all or none, so
 * two bodies sharing senders never each hold a part.  Release is always
 * the release script: a plain DEL could free somebody else's lock.
 */

/* KEYS: the keys; ARGV[1]: token, ARGV[2]: ttl (ms); 1: taken, 0: held */

static const char  ngx_http_webhook_lock_acquire_lua[] =
    "for i = 1, #KEYS do\n"
    "  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end\n"
    "end\n"
    "for i = 1, #KEYS do\n"
    "  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])\n"
    "end\n"
    "return 1\n";


/*
 * KEYS: the keys; ARGV[1]: token, ARGV[2]: hold (ms).  Only keys still
 * holding our token: deleted, or left to expire after the hold.
 * Returns how many keys were ours.
 */

static const char  ngx_http_webhook_lock_release_lua[] =
    "local n = 0\n"
    "for i = 1, #KEYS do\n"
    "  if redis.call('GET', KEYS[i]) == ARGV[1] then\n"
    "    if ARGV[2] == '0' then\n"
    "      redis.call('DEL', KEYS[i])\n"
    "    else\n"
    "      redis.call('PEXPIRE', KEYS[i], ARGV[2])\n"
    "    end\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";


/*
 * webhook_dedup: one mark per message id, next to the lock keys in the
 * same script, so dedup costs no round trip of its own: the dedup script
 * acquires, the settle script releases.  A mark holds the token of the
 * request processing the id (expiring with its lock), or "done" once a
 * request carrying it was answered 2xx.
 *
 * KEYS: the lock keys, then the marks; ARGV[1]: token, ARGV[2]: how
 * many lock keys, ARGV[3]: ttl (ms).  3: every id is done, 2: an id is
 * being processed, 0: a lock is held; nothing is taken then.  1: the
 * locks are taken and every mark not done holds the token.
 */

static const char  ngx_http_webhook_lock_dedup_lua[] =
    "local n = tonumber(ARGV[2])\n"
    "local new = 0\n"
    "for i = n + 1, #KEYS do\n"
    "  local v = redis.call('GET', KEYS[i])\n"
    "  if not v then\n"
    "    new = new + 1\n"
    "  elseif v ~= 'done' then\n"
    "    return 2\n"
    "  end\n"
    "end\n"
    "if new == 0 then return 3 end\n"
    "for i = 1, n do\n"
    "  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end\n"
    "end\n"
    "for i = 1, n do\n"
    "  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[3])\n"
    "end\n"
    "for i = n + 1, #KEYS do\n"
    "  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[3], 'NX')\n"
    "end\n"
    "return 1\n";


/*
 * KEYS: the lock keys, then the marks; ARGV[1]: token, ARGV[2]: how
 * many lock keys, ARGV[3]: how long a "done" mark lives (ms), or "0"
 * when the request failed, ARGV[4]: hold (ms).  The lock keys as in the
 * release script.  Success: every mark not done becomes "done", ours or
 * not, since the upstream took every id of the body.  Failure: only
 * marks still holding our token go, so the redelivery gets through.
 * Returns how many lock keys were ours.  The keys come first and a
 * "done" is best effort (pcall): out of memory, Redis refuses a SET only
 * as a script's first write, and never refuses the release.
 */

static const char  ngx_http_webhook_lock_settle_lua[] =
    "local n = tonumber(ARGV[2])\n"
    "local r = 0\n"
    "for i = 1, n do\n"
    "  if redis.call('GET', KEYS[i]) == ARGV[1] then\n"
    "    if ARGV[4] == '0' then\n"
    "      redis.call('DEL', KEYS[i])\n"
    "    else\n"
    "      redis.call('PEXPIRE', KEYS[i], ARGV[4])\n"
    "    end\n"
    "    r = r + 1\n"
    "  end\n"
    "end\n"
    "for i = n + 1, #KEYS do\n"
    "  local v = redis.call('GET', KEYS[i])\n"
    "  if ARGV[3] ~= '0' then\n"
    "    if v ~= 'done' then\n"
    "      redis.pcall('SET', KEYS[i], 'done', 'PX', ARGV[3])\n"
    "    end\n"
    "  elseif v == ARGV[1] then\n"
    "    redis.call('DEL', KEYS[i])\n"
    "  end\n"
    "end\n"
    "return r\n";


/*
 * Locations that wait use the queue script instead, for all three: each
 * lock key has a list "<key>:q" of entries "<token> <lease> <ttl> <keys
 * it takes> <channel>", in arrival order.  A request takes its keys only
 * when each is free and nobody is queued before it; else it queues at
 * the tail of every queue at once, so any two requests keep one order in
 * all the queues they share, and the first of them can always go on: no
 * deadlock.  A release hands the key to the first live entry: taking one
 * key alone, the key becomes its lock at once, valid after the rest of
 * the hold, and "T <token> <ms>" tells its worker; else (several keys,
 * or dedup marks to check) "W <token> <ms>" wakes it to take them
 * itself.  Dedup marks are checked and set when the request takes its
 * keys, settled when it releases them, deleted when it leaves.
 *
 * An entry lives only while its request keeps asking: "<lease>" (Redis
 * clock, ms) is pushed on by each question, which a waiter asks about
 * once a second, and never past the end of its wait.  So an entry whose
 * request is gone without leaving (worker killed, node gone, leave lost)
 * dies within a lease.  So does, at once, an entry whose worker's
 * channel has no subscriber (the worker is gone, or its subscriber
 * reconnects: its next question queues it again).  Dead entries are
 * never handed anything: a release skips them (PUBLISH says 0), and
 * whoever asks drops those at the head of its queues first (those with
 * no subscriber only while the key is free, when it matters: PUBSUB
 * NUMSUB wakes nobody; refused, by an ACL say, the lease alone counts),
 * so a live waiter never waits behind them.
 *
 * Under maxmemory with noeviction Redis refuses a script's first write
 * when it may add data (SET, RPUSH, LSET), and nothing after a write.  A
 * release writes the keys first (LPOP, DEL, PEXPIRE; the handover's SET
 * comes after its LPOP), then the marks, a "done" refused for memory
 * left to expire with the lock: the release itself always goes through.
 *
 * KEYS: the locks, their queues, the dedup marks.  ARGV[1]: "w", "r" or
 * "l", [2] token, [3] how many locks.  "w": [4] ttl, [5] wait left, [6]
 * most entries, [7] channel, [8] lease; returns {1, ms}: taken, usable
 * after ms (handed over within a hold); {0, ms}: queued, and if ms > 0,
 * first in line behind a key that expires in ms with nobody to hand it
 * over; {2, 0}: an id is being processed, {3, 0}: every id is done, and
 * it left the queues; {4, 0}: full, not queued.  "r": [4] how long a
 * done mark lives (0: the request failed), [5] hold; returns how many
 * locks were ours.  "l": [4] ttl.
 */

static const char  ngx_http_webhook_lock_queue_lua[] =
    "redis.replicate_commands()\n"
    "local op, tok, n = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local tm = redis.call('TIME')\n"
    "local now = tm[1] * 1000 + math.floor(tm[2] / 1000)\n"
    "local function parse(e)\n"
    "  return string.match(e, '^(%x+) (%d+) (%d+) (%d+) (%S+)$')\n"
    "end\n"
    "local function ours(e)\n"
    "  return string.sub(e, 1, #tok + 1) == tok .. ' '\n"
    "end\n"
    "local function find(q)\n"
    "  local es = redis.call('LRANGE', q, 0, -1)\n"
    "  for i = 1, #es do\n"
    "    if ours(es[i]) then return i - 1, es[i] end\n"
    "  end\n"
    "end\n"
    "local function heard(ch)\n"
    "  local r = redis.pcall('PUBSUB', 'NUMSUB', ch)\n"
    "  return type(r[2]) ~= 'number' or r[2] > 0\n"
    "end\n"
    "local function sweep(q, free)\n"
    "  while true do\n"
    "    local e = redis.call('LINDEX', q, 0)\n"
    "    if not e or ours(e) then return end\n"
    "    local t, lease, _, _, ch = parse(e)\n"
    "    if t and tonumber(lease) > now and (not free or heard(ch)) then\n"
    "      return\n"
    "    end\n"
    "    redis.call('LPOP', q)\n"
    "  end\n"
    "end\n"
    "local function pass(k, q, after, give)\n"
    "  while true do\n"
    "    local e = redis.call('LINDEX', q, 0)\n"
    "    if not e then return 'none' end\n"
    "    local t, lease, ttl, nk, ch = parse(e)\n"
    "    if t == tok then return 'me' end\n"
    "    if t and tonumber(lease) > now then\n"
    "      if give and nk == '1' then\n"
    "        if redis.call('PUBLISH', ch, 'T ' .. t .. ' ' .. after) > 0\n"
    "        then\n"
    "          redis.call('LPOP', q)\n"
    "          redis.call('SET', k, t, 'PX', after + tonumber(ttl))\n"
    "          return 'given'\n"
    "        end\n"
    "      elseif redis.call('PUBLISH', ch, 'W ' .. t .. ' ' .. after) > 0\n"
    "      then\n"
    "        return 'woken'\n"
    "      end\n"
    "    end\n"
    "    redis.call('LPOP', q)\n"
    "  end\n"
    "end\n"
    "local function free(k, hold)\n"
    "  if hold > 0 then\n"
    "    redis.call('PEXPIRE', k, hold)\n"
    "  else\n"
    "    redis.call('DEL', k)\n"
    "  end\n"
    "end\n"
    "local function leave(ttl)\n"
    "  for i = 1, n do\n"
    "    local k, q = KEYS[i], KEYS[n + i]\n"
    "    local p, e = find(q)\n"
    "    if e then redis.call('LREM', q, 1, e) end\n"
    "    local v = redis.call('GET', k)\n"
    "    if v == tok then\n"
    "      local hold = math.max(redis.call('PTTL', k) - ttl, 0)\n"
    "      if pass(k, q, hold, true) ~= 'given' then free(k, hold) end\n"
    "    elseif p == 0 and v then\n"
    "      pass(k, q, math.max(redis.call('PTTL', k), 0), false)\n"
    "    elseif p == 0 then\n"
    "      pass(k, q, 0, true)\n"
    "    end\n"
    "  end\n"
    "  for i = 2 * n + 1, #KEYS do\n"
    "    if redis.call('GET', KEYS[i]) == tok then\n"
    "      redis.call('DEL', KEYS[i])\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if op == 'r' then\n"
    "  local done, hold, r = tonumber(ARGV[4]), tonumber(ARGV[5]), 0\n"
    "  for i = 1, n do\n"
    "    if redis.call('GET', KEYS[i]) == tok then\n"
    "      r = r + 1\n"
    "      if pass(KEYS[i], KEYS[n + i], hold, true) ~= 'given' then\n"
    "        free(KEYS[i], hold)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  for i = 2 * n + 1, #KEYS do\n"
    "    local v = redis.call('GET', KEYS[i])\n"
    "    if done > 0 then\n"
    "      if v ~= 'done' then\n"
    "        redis.pcall('SET', KEYS[i], 'done', 'PX', done)\n"
    "      end\n"
    "    elseif v == tok then\n"
    "      redis.call('DEL', KEYS[i])\n"
    "    end\n"
    "  end\n"
    "  return r\n"
    "end\n"
    "local ttl = tonumber(ARGV[4])\n"
    "if op == 'l' then\n"
    "  leave(ttl)\n"
    "  return 0\n"
    "end\n"
    "local wait = tonumber(ARGV[5])\n"
    "local mine, late = 0, 0\n"
    "for i = 1, n do\n"
    "  if redis.call('GET', KEYS[i]) == tok then\n"
    "    mine = mine + 1\n"
    "    late = math.max(late, redis.call('PTTL', KEYS[i]) - ttl)\n"
    "  end\n"
    "end\n"
    "if mine == n then return {1, late} end\n"
    "local new, busy = 0, false\n"
    "for i = 2 * n + 1, #KEYS do\n"
    "  local v = redis.call('GET', KEYS[i])\n"
    "  if not v then\n"
    "    new = new + 1\n"
    "  elseif v ~= 'done' then\n"
    "    busy = true\n"
    "  end\n"
    "end\n"
    "if #KEYS > 2 * n and new == 0 and not busy then\n"
    "  leave(ttl)\n"
    "  return {3, 0}\n"
    "end\n"
    "local take, hint, es = true, 0, {}\n"
    "for i = 1, n do\n"
    "  local k, q = KEYS[i], KEYS[n + i]\n"
    "  local v = redis.call('GET', k)\n"
    "  sweep(q, not v or v == tok)\n"
    "  local p, e = find(q)\n"
    "  es[i] = e\n"
    "  if v and v ~= tok then\n"
    "    take = false\n"
    "    if p == 0 or not p and redis.call('LLEN', q) == 0 then\n"
    "      hint = math.max(hint, redis.call('PTTL', k))\n"
    "    end\n"
    "  elseif p ~= 0 and redis.call('LLEN', q) > 0 then\n"
    "    local r = (not p or p == 1) and pass(k, q, 0, true) or 'later'\n"
    "    if r ~= 'me' and r ~= 'none' then take = false end\n"
    "  end\n"
    "end\n"
    "if take then\n"
    "  if busy then\n"
    "    leave(ttl)\n"
    "    return {2, 0}\n"
    "  end\n"
    "  for i = 1, n do\n"
    "    redis.call('SET', KEYS[i], tok, 'PX', ttl)\n"
    "    if es[i] then redis.call('LREM', KEYS[n + i], 1, es[i]) end\n"
    "  end\n"
    "  for i = 2 * n + 1, #KEYS do\n"
    "    redis.call('SET', KEYS[i], tok, 'PX', ttl, 'NX')\n"
    "  end\n"
    "  return {1, 0}\n"
    "end\n"
    "local e = tok .. ' ' .. now + math.min(wait, tonumber(ARGV[8])) .. ' '\n"
    "          .. ttl .. ' ' .. #KEYS - n .. ' ' .. ARGV[7]\n"
    "for i = 1, n do\n"
    "  if not es[i] then\n"
    "    for j = 1, n do\n"
    "      local q = KEYS[n + j]\n"
    "      if redis.call('LLEN', q) >= tonumber(ARGV[6]) then\n"
    "        for _, x in ipairs(redis.call('LRANGE', q, 0, -1)) do\n"
    "          if tonumber(string.match(x, '^%x+ (%d+) ') or 0) <= now\n"
    "          then\n"
    "            redis.call('LREM', q, 1, x)\n"
    "          end\n"
    "        end\n"
    "        if redis.call('LLEN', q) - (es[j] and 1 or 0)\n"
    "           >= tonumber(ARGV[6])\n"
    "        then\n"
    "          return {4, 0}\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    for j = 1, n do\n"
    "      local q = KEYS[n + j]\n"
    "      if es[j] then redis.call('LREM', q, 1, es[j]) end\n"
    "      redis.call('RPUSH', q, e)\n"
    "      if redis.call('PTTL', q) < wait then\n"
    "        redis.call('PEXPIRE', q, wait)\n"
    "      end\n"
    "    end\n"
    "    return {0, hint}\n"
    "  end\n"
    "end\n"
    "for i = 1, n do\n"
    "  local q = KEYS[n + i]\n"
    "  redis.call('LSET', q, (find(q)), e)\n"
    "end\n"
    "return {0, hint}\n";


static ngx_http_webhook_lock_script_t  ngx_http_webhook_lock_acquire_script = {
    ngx_string(ngx_http_webhook_lock_acquire_lua), "", 0, 0
};

static ngx_http_webhook_lock_script_t  ngx_http_webhook_lock_release_script = {
    ngx_string(ngx_http_webhook_lock_release_lua), "", 0, 0
};

static ngx_http_webhook_lock_script_t  ngx_http_webhook_lock_dedup_script = {
    ngx_string(ngx_http_webhook_lock_dedup_lua), "", 1, 0
};

static ngx_http_webhook_lock_script_t  ngx_http_webhook_lock_settle_script = {
    ngx_string(ngx_http_webhook_lock_settle_lua), "", 1, 0
};

static ngx_http_webhook_lock_script_t  ngx_http_webhook_lock_queue_script = {
    ngx_string(ngx_http_webhook_lock_queue_lua), "", 0, 1
};


static ngx_http_webhook_lock_script_t  *ngx_http_webhook_lock_scripts[] = {
    &ngx_http_webhook_lock_acquire_script,
    &ngx_http_webhook_lock_release_script,
    &ngx_http_webhook_lock_dedup_script,
    &ngx_http_webhook_lock_settle_script,
    &ngx_http_webhook_lock_queue_script
};



void
ngx_http_webhook_lock_scripts_init(void)
{
    u_char                           md[SHA_DIGEST_LENGTH];
    ngx_uint_t                       i;
    ngx_http_webhook_lock_script_t  *s;

    for (i = 0; i < sizeof(ngx_http_webhook_lock_scripts)
                    / sizeof(ngx_http_webhook_lock_scripts[0]); i++)
    {
        s = ngx_http_webhook_lock_scripts[i];
        SHA1(s->text.data, s->text.len, md);
        ngx_hex_dump(s->sha, md, SHA_DIGEST_LENGTH);
    }
}


ngx_int_t
ngx_http_webhook_lock_scripts_load(ngx_http_webhook_lock_conn_t *cn)
{
    size_t                           argvlen[3];
    ngx_uint_t                       i;
    const char                      *argv[3];
    ngx_http_webhook_lock_script_t  *s;

    for (i = 0; i < sizeof(ngx_http_webhook_lock_scripts)
                    / sizeof(ngx_http_webhook_lock_scripts[0]); i++)
    {
        s = ngx_http_webhook_lock_scripts[i];

        /* the dedup and queue scripts only where a location uses them */

        if ((s->dedup && !cn->conf->dedup) || (s->queue && !cn->conf->queue))
        {
            continue;
        }

        argv[0] = "SCRIPT";
        argvlen[0] = sizeof("SCRIPT") - 1;
        argv[1] = "LOAD";
        argvlen[1] = sizeof("LOAD") - 1;
        argv[2] = (const char *) s->text.data;
        argvlen[2] = s->text.len;

        if (ngx_http_webhook_lock_conn_setup(cn,
                                             ngx_http_webhook_lock_script_reply,
                                             s, 3, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_webhook_lock_script_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_webhook_lock_script_t *s = privdata;

    redisReply                    *reply;
    ngx_http_webhook_lock_conn_t  *cn;

    cn = ac->data;
    reply = r;

    if (reply == NULL
        || ac != cn->ac
        || cn->state != NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP)
    {
        return;
    }

    /* not fatal: EVALSHA falls back to EVAL */

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "redis %V: \"SCRIPT LOAD\" failed: %*s",
                      &cn->conf->name, (size_t) reply->len, reply->str);

    } else if (reply->type != REDIS_REPLY_STRING
               || reply->len != sizeof(s->sha)
               || ngx_strncmp(reply->str, s->sha, sizeof(s->sha)) != 0)
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "redis %V: \"SCRIPT LOAD\" returned "
                      "an unexpected sha1", &cn->conf->name);
    }

    ngx_http_webhook_lock_conn_setup_done(cn);
}


/*
 * The arguments, in one allocation with the ticket:
 *
 *   SET key token NX PX ttl
 *   EVALSHA acquire|release N key... token ttl|hold
 *   EVALSHA dedup|settle N+M key... mark... token N [done] ttl|hold
 *   EVALSHA queue 2N+M key... key:q... mark... w token N ttl wait max
 *       channel lease
 *   EVALSHA queue 2N+M key... key:q... mark... r token N done hold
 *   EVALSHA queue 2N+M key... key:q... mark... l token N ttl
 *   EVALSHA release N key... token ttl (a renewal)
 *
 * A resend rewrites the last argument, the hold of a release: it is the
 * last number in the buffer too, with room for NGX_INT_T_LEN.
 */

ngx_http_webhook_lock_ticket_t *
ngx_http_webhook_lock_script_acquire(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token, ngx_msec_t ttl)
{
    int                              n;
    u_char                          *p;
    ngx_http_webhook_lock_script_t  *s;
    ngx_http_webhook_lock_ticket_t  *t;

    if (nkeys == 1 && nmarks == 0) {
        t = ngx_http_webhook_lock_script_alloc(NGX_HTTP_WEBHOOK_LOCK_CMD_SET,
                                               6, keys, nkeys, NULL, 0, token,
                                               &p);
        if (t == NULL) {
            return NULL;
        }

        ngx_http_webhook_lock_script_arg(t, 0, "SET", 3);
        ngx_http_webhook_lock_script_arg(t, 1, t->keys[0].data,
                                         t->keys[0].len);
        ngx_http_webhook_lock_script_arg(t, 2, t->token.data, t->token.len);
        ngx_http_webhook_lock_script_arg(t, 3, "NX", 2);
        ngx_http_webhook_lock_script_arg(t, 4, "PX", 2);
        (void) ngx_http_webhook_lock_script_number(t, 5, p, ttl);

        t->ms = ttl;

        return t;
    }

    t = ngx_http_webhook_lock_script_alloc(NGX_HTTP_WEBHOOK_LOCK_CMD_ACQUIRE,
                                           (int) (nkeys + nmarks) + 5
                                           + (nmarks ? 1 : 0),
                                           keys, nkeys, marks, nmarks, token,
                                           &p);
    if (t == NULL) {
        return NULL;
    }

    s = nmarks ? &ngx_http_webhook_lock_dedup_script
               : &ngx_http_webhook_lock_acquire_script;

    n = 0;
    p = ngx_http_webhook_lock_script_keys(t, s, 0, &n, p);

    ngx_http_webhook_lock_script_arg(t, n++, t->token.data, t->token.len);

    if (nmarks) {
        p = ngx_http_webhook_lock_script_number(t, n++, p, nkeys);
    }

    (void) ngx_http_webhook_lock_script_number(t, n, p, ttl);

    t->ms = ttl;

    return t;
}


ngx_http_webhook_lock_ticket_t *
ngx_http_webhook_lock_script_release(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token, ngx_msec_t hold,
    ngx_msec_t done)
{
    int                              n;
    u_char                          *p;
    ngx_http_webhook_lock_script_t  *s;
    ngx_http_webhook_lock_ticket_t  *t;

    t = ngx_http_webhook_lock_script_alloc(NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE,
                                           (int) (nkeys + nmarks) + 5
                                           + (nmarks ? 2 : 0),
                                           keys, nkeys, marks, nmarks, token,
                                           &p);
    if (t == NULL) {
        return NULL;
    }

    s = nmarks ? &ngx_http_webhook_lock_settle_script
               : &ngx_http_webhook_lock_release_script;

    n = 0;
    p = ngx_http_webhook_lock_script_keys(t, s, 0, &n, p);

    ngx_http_webhook_lock_script_arg(t, n++, t->token.data, t->token.len);

    if (nmarks) {
        p = ngx_http_webhook_lock_script_number(t, n++, p, nkeys);
        p = ngx_http_webhook_lock_script_number(t, n++, p, done);
    }

    (void) ngx_http_webhook_lock_script_number(t, n, p, hold);

    t->ms = hold;

    return t;
}


ngx_http_webhook_lock_ticket_t *
ngx_http_webhook_lock_script_wait(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token, ngx_msec_t ttl,
    ngx_msec_t wait, ngx_uint_t max, ngx_str_t *channel, ngx_msec_t lease)
{
    int                              n;
    u_char                          *p;
    ngx_http_webhook_lock_ticket_t  *t;

    t = ngx_http_webhook_lock_script_alloc(NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT,
                                           (int) (2 * nkeys + nmarks) + 11,
                                           keys, nkeys, marks, nmarks, token,
                                           &p);
    if (t == NULL) {
        return NULL;
    }

    n = 0;
    p = ngx_http_webhook_lock_script_keys(t,
                                          &ngx_http_webhook_lock_queue_script,
                                          1, &n, p);

    ngx_http_webhook_lock_script_arg(t, n++, "w", 1);
    ngx_http_webhook_lock_script_arg(t, n++, t->token.data, t->token.len);
    p = ngx_http_webhook_lock_script_number(t, n++, p, nkeys);
    p = ngx_http_webhook_lock_script_number(t, n++, p, ttl);
    p = ngx_http_webhook_lock_script_number(t, n++, p, wait);
    p = ngx_http_webhook_lock_script_number(t, n++, p, max);
    ngx_http_webhook_lock_script_arg(t, n++, channel->data, channel->len);
    (void) ngx_http_webhook_lock_script_number(t, n, p, lease);

    t->ms = ttl;

    return t;
}


ngx_http_webhook_lock_ticket_t *
ngx_http_webhook_lock_script_handoff(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token, ngx_msec_t hold,
    ngx_msec_t done)
{
    int                              n;
    u_char                          *p;
    ngx_http_webhook_lock_ticket_t  *t;

    t = ngx_http_webhook_lock_script_alloc(NGX_HTTP_WEBHOOK_LOCK_CMD_HANDOFF,
                                           (int) (2 * nkeys + nmarks) + 8,
                                           keys, nkeys, marks, nmarks, token,
                                           &p);
    if (t == NULL) {
        return NULL;
    }

    n = 0;
    p = ngx_http_webhook_lock_script_keys(t,
                                          &ngx_http_webhook_lock_queue_script,
                                          1, &n, p);

    ngx_http_webhook_lock_script_arg(t, n++, "r", 1);
    ngx_http_webhook_lock_script_arg(t, n++, t->token.data, t->token.len);
    p = ngx_http_webhook_lock_script_number(t, n++, p, nkeys);
    p = ngx_http_webhook_lock_script_number(t, n++, p, done);
    (void) ngx_http_webhook_lock_script_number(t, n, p, hold);

    t->ms = hold;

    return t;
}


ngx_http_webhook_lock_ticket_t *
ngx_http_webhook_lock_script_leave(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token, ngx_msec_t ttl)
{
    int                              n;
    u_char                          *p;
    ngx_http_webhook_lock_ticket_t  *t;

    t = ngx_http_webhook_lock_script_alloc(NGX_HTTP_WEBHOOK_LOCK_CMD_LEAVE,
                                           (int) (2 * nkeys + nmarks) + 7,
                                           keys, nkeys, marks, nmarks, token,
                                           &p);
    if (t == NULL) {
        return NULL;
    }

    n = 0;
    p = ngx_http_webhook_lock_script_keys(t,
                                          &ngx_http_webhook_lock_queue_script,
                                          1, &n, p);

    ngx_http_webhook_lock_script_arg(t, n++, "l", 1);
    ngx_http_webhook_lock_script_arg(t, n++, t->token.data, t->token.len);
    p = ngx_http_webhook_lock_script_number(t, n++, p, nkeys);
    (void) ngx_http_webhook_lock_script_number(t, n, p, ttl);

    t->ms = ttl;

    return t;
}


ngx_http_webhook_lock_ticket_t *
ngx_http_webhook_lock_script_renew(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *token, ngx_msec_t ttl)
{
    int                              n;
    u_char                          *p;
    ngx_http_webhook_lock_ticket_t  *t;

    t = ngx_http_webhook_lock_script_alloc(NGX_HTTP_WEBHOOK_LOCK_CMD_RENEW,
                                           (int) nkeys + 5, keys, nkeys,
                                           NULL, 0, token, &p);
    if (t == NULL) {
        return NULL;
    }

    /* the release script, with the ttl for a hold: the same test */

    n = 0;
    p = ngx_http_webhook_lock_script_keys(t,
                                          &ngx_http_webhook_lock_release_script,
                                          0, &n, p);

    ngx_http_webhook_lock_script_arg(t, n++, t->token.data, t->token.len);
    (void) ngx_http_webhook_lock_script_number(t, n, p, ttl);

    t->ms = ttl;

    return t;
}


/* one allocation: the ticket, keys, argv, argvlen, then the bytes */

static ngx_http_webhook_lock_ticket_t *
ngx_http_webhook_lock_script_alloc(ngx_http_webhook_lock_command_e command,
    int argc, ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks,
    ngx_uint_t nmarks, ngx_str_t *token, u_char **pp)
{
    u_char                          *p;
    size_t                           size;
    ngx_str_t                       *src;
    ngx_uint_t                       i, queue;
    ngx_http_webhook_lock_ticket_t  *t;

    queue = (command >= NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT
             && command <= NGX_HTTP_WEBHOOK_LOCK_CMD_LEAVE);

    size = ngx_align(sizeof(ngx_http_webhook_lock_ticket_t), sizeof(void *))
           + (nkeys + nmarks) * sizeof(ngx_str_t)
           + argc * (sizeof(char *) + sizeof(size_t))
           + token->len + 6 * NGX_INT_T_LEN;

    for (i = 0; i < nkeys; i++) {
        size += queue ? 2 * keys[i].len + 2 : keys[i].len;
    }

    for (i = 0; i < nmarks; i++) {
        size += marks[i].len;
    }

    t = ngx_alloc(size, ngx_cycle->log);
    if (t == NULL) {
        return NULL;
    }

    ngx_memzero(t, sizeof(ngx_http_webhook_lock_ticket_t));

    t->keys = (ngx_str_t *) ((u_char *) t
                  + ngx_align(sizeof(ngx_http_webhook_lock_ticket_t),
                              sizeof(void *)));
    t->argv = (const char **) (t->keys + nkeys + nmarks);
    t->argvlen = (size_t *) (t->argv + argc);
    p = (u_char *) (t->argvlen + argc);

    for (i = 0; i < nkeys + nmarks; i++) {
        src = (i < nkeys) ? &keys[i] : &marks[i - nkeys];

        t->keys[i].len = src->len;
        t->keys[i].data = p;
        p = ngx_cpymem(p, src->data, src->len);
    }

    t->token.len = token->len;
    t->token.data = p;
    p = ngx_cpymem(p, token->data, token->len);

    t->argc = argc;
    t->command = command;
    t->nkeys = nkeys;
    t->nmarks = nmarks;

    *pp = p;

    return t;
}


/* EVALSHA sha count key... [key:q...] mark... */

static u_char *
ngx_http_webhook_lock_script_keys(ngx_http_webhook_lock_ticket_t *t,
    ngx_http_webhook_lock_script_t *s, ngx_uint_t queue, int *np, u_char *p)
{
    int         n;
    ngx_uint_t  i;

    n = *np;

    ngx_http_webhook_lock_script_arg(t, n++, "EVALSHA", 7);
    ngx_http_webhook_lock_script_arg(t, n++, s->sha, sizeof(s->sha));
    p = ngx_http_webhook_lock_script_number(t, n++, p,
                                            (queue ? 2 * t->nkeys : t->nkeys)
                                            + t->nmarks);

    for (i = 0; i < t->nkeys; i++) {
        ngx_http_webhook_lock_script_arg(t, n++, t->keys[i].data,
                                         t->keys[i].len);
    }

    if (queue) {
        for (i = 0; i < t->nkeys; i++) {
            ngx_http_webhook_lock_script_arg(t, n++, p, t->keys[i].len + 2);
            p = ngx_cpymem(p, t->keys[i].data, t->keys[i].len);
            p = ngx_cpymem(p, ":q", 2);
        }
    }

    for (i = t->nkeys; i < t->nkeys + t->nmarks; i++) {
        ngx_http_webhook_lock_script_arg(t, n++, t->keys[i].data,
                                         t->keys[i].len);
    }

    t->script = s;

    *np = n;

    return p;
}


/* a number argument, written at p: returns the end */

static u_char *
ngx_http_webhook_lock_script_number(ngx_http_webhook_lock_ticket_t *t, int n,
    u_char *p, ngx_uint_t value)
{
    u_char  *last;

    last = ngx_sprintf(p, "%ui", value);

    ngx_http_webhook_lock_script_arg(t, n, p, last - p);

    return last;
}


static ngx_inline void
ngx_http_webhook_lock_script_arg(ngx_http_webhook_lock_ticket_t *t, int n,
    const void *data, size_t len)
{
    t->argv[n] = data;
    t->argvlen[n] = len;
}


void
ngx_http_webhook_lock_script_eval(ngx_http_webhook_lock_ticket_t *t)
{
    t->argv[0] = "EVAL";
    t->argvlen[0] = sizeof("EVAL") - 1;
    t->argv[1] = (const char *) t->script->text.data;
    t->argvlen[1] = t->script->text.len;

    t->retried = 1;
}


void
ngx_http_webhook_lock_script_hold(ngx_http_webhook_lock_ticket_t *t,
    ngx_msec_t hold)
{
    u_char  *p;

    t->ms = hold;

    p = (u_char *) t->argv[t->argc - 1];
    t->argvlen[t->argc - 1] = ngx_sprintf(p, "%M", hold) - p;
}


ngx_int_t
ngx_http_webhook_lock_script_result(ngx_http_webhook_lock_ticket_t *t,
    redisReply *reply, ngx_str_t *name)
{
    redisReply  **e;

    if (reply == NULL) {
        /* the context went away; that is logged where it happened */
        return NGX_ERROR;
    }

    switch (reply->type) {

    case REDIS_REPLY_STATUS:
        if (t->command == NGX_HTTP_WEBHOOK_LOCK_CMD_SET
            && reply->len == 2
            && ngx_strncmp(reply->str, "OK", 2) == 0)
        {
            return 1;
        }

        break;

    case REDIS_REPLY_NIL:
        if (t->command == NGX_HTTP_WEBHOOK_LOCK_CMD_SET) {
            return 0;
        }

        break;

    case REDIS_REPLY_INTEGER:
        if (t->command != NGX_HTTP_WEBHOOK_LOCK_CMD_SET
            && t->command != NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT
            && reply->integer >= 0)
        {
            return (ngx_int_t) reply->integer;
        }

        break;

    case REDIS_REPLY_ARRAY:

        /* "w": {0 queued | 1 taken | 2 processing | 3 duplicate | 4 full,
                 ms} */

        e = reply->element;

        if (t->command == NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT
            && reply->elements == 2
            && e[0]->type == REDIS_REPLY_INTEGER
            && e[0]->integer >= 0 && e[0]->integer <= 4
            && e[1]->type == REDIS_REPLY_INTEGER)
        {
            t->hint = (e[1]->integer > 0) ? (ngx_msec_t) e[1]->integer : 0;
            return (ngx_int_t) e[0]->integer;
        }

        break;

    case REDIS_REPLY_ERROR:
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis %V: \"%s\" failed: %*s", name,
                      t->argv[0], (size_t) reply->len, reply->str);
        return NGX_ERROR;

    default:
        break;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis %V: unexpected reply of type %d to \"%s\"",
                  name, reply->type, t->argv[0]);

    return NGX_ERROR;
}
