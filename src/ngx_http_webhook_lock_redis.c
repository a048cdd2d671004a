
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "ngx_http_webhook_lock_redis.h"
#include "ngx_http_webhook_lock_hiredis.h"
#include "ngx_http_webhook_lock_status.h"


#define NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MIN  50
#define NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MAX  2000

/* a waiter that nothing woke asks again after this, +-25% */
#define NGX_HTTP_WEBHOOK_LOCK_POLL         1000

/* "webhook_lock:", 64 random bits in hex, ":", the pid */
#define NGX_HTTP_WEBHOOK_LOCK_CHANNEL_LEN                                    \
    (sizeof("webhook_lock:") - 1 + 16 + 1 + NGX_INT64_LEN)


typedef enum {
    NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN = 0,      /* no context */
    NGX_HTTP_WEBHOOK_LOCK_REDIS_CONNECTING,
    NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP,         /* AUTH, SELECT... sent */
    NGX_HTTP_WEBHOOK_LOCK_REDIS_READY,
    NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING       /* freed by a posted event */
} ngx_http_webhook_lock_redis_state_e;


typedef enum {
    NGX_HTTP_WEBHOOK_LOCK_CMD_SET = 0,         /* acquire, one key */
    NGX_HTTP_WEBHOOK_LOCK_CMD_ACQUIRE,         /* acquire, several keys */
    NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE,
    NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT,            /* queue script: take or queue */
    NGX_HTTP_WEBHOOK_LOCK_CMD_HANDOFF,         /* release to the queue */
    NGX_HTTP_WEBHOOK_LOCK_CMD_LEAVE            /* out of the queue */
} ngx_http_webhook_lock_command_e;


typedef struct {
    ngx_str_t                            text;
    u_char                               sha[SHA_DIGEST_LENGTH * 2];
    ngx_uint_t                           dedup;     /* loaded if used */
    ngx_uint_t                           queue;     /* loaded if used */
} ngx_http_webhook_lock_script_t;


/*
 * Owned by this file, never by a request: freed by the reply callback
 * alone, which hiredis always calls, with a NULL reply when the context
 * dies.  A request only ever clears "handler" (orphan).  A release
 * that could not be done waits in "deferred" instead.
 */

struct ngx_http_webhook_lock_ticket_s {
    ngx_http_webhook_lock_reply_pt       handler;   /* NULL: nobody waits */
    void                                *data;
    ngx_event_t                          timer;
    ngx_queue_t                          queue;     /* in "deferred" */
    ngx_http_webhook_lock_command_e      command;
    ngx_http_webhook_lock_script_t      *script;    /* NULL: SET */
    ngx_msec_t                           ms;        /* ttl or hold */
    ngx_msec_t                           start;     /* sent or deferred */
    ngx_msec_t                           expire;    /* 0: not known */
    ngx_msec_t                           hint;      /* from a "w" reply */
    ngx_str_t                           *keys;      /* copies, then marks */
    ngx_uint_t                           nkeys;
    ngx_uint_t                           nmarks;    /* dedup marks */
    ngx_str_t                            token;
    int                                  argc;
    const char                         **argv;      /* for the EVAL retry */
    size_t                              *argvlen;
    unsigned                             retried:1;
};


/*
 * A request waiting for its turn, owned by this file as tickets are.
 * Known by its token to the subscriber, which finds it when a release
 * hands it the lock ("T") or wakes it to ask again ("W").
 */

struct ngx_http_webhook_lock_waiter_s {
    ngx_str_node_t                       node;      /* str: the token */
    ngx_queue_t                          queue;     /* in "waiters" */
    ngx_http_webhook_lock_reply_pt       handler;   /* NULL: gone */
    void                                *data;
    ngx_http_webhook_lock_ticket_t      *ticket;    /* a "w" in flight */
    ngx_event_t                          wait;      /* the deadline */
    ngx_event_t                          timer;     /* next ask, or hold */
    ngx_msec_t                           start;
    ngx_msec_t                           answered;  /* the first answer */
    ngx_msec_t                           deadline;
    ngx_msec_t                           ttl;
    ngx_msec_t                           after;     /* a wake, for later */
    ngx_uint_t                           max;
    ngx_str_t                           *keys;      /* copies, then marks */
    ngx_uint_t                           nkeys;
    ngx_uint_t                           nmarks;
    unsigned                             queued:1;  /* so it waited */
    unsigned                             taken:1;   /* ours, after timer */
    unsigned                             again:1;   /* woken while asking */
};


typedef struct ngx_http_webhook_lock_conn_s  ngx_http_webhook_lock_conn_t;

typedef void (*ngx_http_webhook_lock_conn_pt)(
    ngx_http_webhook_lock_conn_t *cn);


/*
 * A connection to Redis and its life: connect, setup commands (whose
 * replies make it ready), reconnect with backoff.  A worker has one for
 * commands and, where some location waits, one subscribed to the
 * worker's channel.  ac->data points back here.
 */

struct ngx_http_webhook_lock_conn_s {
    redisAsyncContext                   *ac;
    ngx_http_webhook_lock_redis_state_e  state;
    const char                          *role;      /* in log lines */
    ngx_uint_t                           setup;     /* replies still due */
    ngx_msec_t                           backoff;
    ngx_event_t                          connect;   /* connect_timeout */
    ngx_event_t                          reconnect;
    ngx_event_t                          drop;      /* posted */
    ngx_http_webhook_lock_conn_pt        init;      /* sends the setup */
    ngx_http_webhook_lock_conn_pt        ready_handler;
    ngx_http_webhook_lock_conn_pt        lost_handler;
    unsigned                             down:1;    /* "unreachable" said */
};


typedef struct {
    ngx_http_webhook_lock_redis_conf_t  *conf;
    ngx_http_webhook_lock_conn_t         cmd;
    ngx_http_webhook_lock_conn_t         sub;
    ngx_uint_t                           pending;   /* live tickets */
    ngx_queue_t                          deferred;  /* releases to resend */
    ngx_uint_t                           ndeferred;
    time_t                               full;      /* max_pending logged */
    ngx_rbtree_t                         tokens;    /* waiters by token */
    ngx_rbtree_node_t                    sentinel;
    ngx_queue_t                          waiters;
    ngx_event_t                          fail;      /* posted: cmd lost */
    ngx_str_t                            channel;   /* wake-ups come on */
    unsigned                             active:1;  /* init_process ran */
    unsigned                             exiting:1;
    unsigned                             ready:1;   /* counted connected */
    unsigned                             lost:1;    /* a reconnect is due */
} ngx_http_webhook_lock_redis_t;


static ngx_int_t ngx_http_webhook_lock_redis_overloaded(
    ngx_http_webhook_lock_redis_t *rd);
static ngx_int_t ngx_http_webhook_lock_redis_give(
    ngx_http_webhook_lock_command_e command, ngx_str_t *keys,
    ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token,
    ngx_msec_t ms, ngx_msec_t done);
static ngx_http_webhook_lock_ticket_t *ngx_http_webhook_lock_redis_create(
    ngx_http_webhook_lock_command_e command, ngx_str_t *keys,
    ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token,
    ngx_msec_t ms, ngx_msec_t done, ngx_msec_t wait, ngx_uint_t max);
static ngx_inline void ngx_http_webhook_lock_redis_arg(
    ngx_http_webhook_lock_ticket_t *t, int n, const void *data, size_t len);
static u_char *ngx_http_webhook_lock_redis_number(
    ngx_http_webhook_lock_ticket_t *t, int n, u_char *p, ngx_uint_t value);
static ngx_int_t ngx_http_webhook_lock_redis_send(
    ngx_http_webhook_lock_redis_t *rd, ngx_http_webhook_lock_ticket_t *t);
static ngx_int_t ngx_http_webhook_lock_redis_defer(
    ngx_http_webhook_lock_redis_t *rd, ngx_http_webhook_lock_ticket_t *t);
static void ngx_http_webhook_lock_redis_resend(
    ngx_http_webhook_lock_redis_t *rd);
static void ngx_http_webhook_lock_redis_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_int_t ngx_http_webhook_lock_redis_eval(redisAsyncContext *ac,
    ngx_http_webhook_lock_ticket_t *t);
static ngx_int_t ngx_http_webhook_lock_redis_result(
    ngx_http_webhook_lock_ticket_t *t, redisReply *reply);
static void ngx_http_webhook_lock_redis_timeout(ngx_event_t *ev);

static ngx_int_t ngx_http_webhook_lock_redis_ask(
    ngx_http_webhook_lock_redis_t *rd, ngx_http_webhook_lock_waiter_t *w);
static void ngx_http_webhook_lock_redis_answer(void *data, ngx_int_t rc);
static void ngx_http_webhook_lock_redis_take(
    ngx_http_webhook_lock_waiter_t *w, ngx_msec_t after);
static void ngx_http_webhook_lock_redis_sooner(
    ngx_http_webhook_lock_waiter_t *w, ngx_msec_t delay);
static void ngx_http_webhook_lock_redis_finish(
    ngx_http_webhook_lock_waiter_t *w, ngx_int_t rc);
static void ngx_http_webhook_lock_redis_wake(
    ngx_http_webhook_lock_redis_t *rd, u_char *p, size_t len);
static void ngx_http_webhook_lock_redis_wait_handler(ngx_event_t *ev);
static void ngx_http_webhook_lock_redis_timer_handler(ngx_event_t *ev);
static void ngx_http_webhook_lock_redis_fail_handler(ngx_event_t *ev);

static void ngx_http_webhook_lock_redis_conn_init(
    ngx_http_webhook_lock_conn_t *cn, ngx_log_t *log, const char *role,
    ngx_http_webhook_lock_conn_pt init, ngx_http_webhook_lock_conn_pt ready,
    ngx_http_webhook_lock_conn_pt lost);
static void ngx_http_webhook_lock_redis_connect(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_connected(
    const redisAsyncContext *ac, int status);
static void ngx_http_webhook_lock_redis_disconnected(
    const redisAsyncContext *ac, int status);
static ngx_int_t ngx_http_webhook_lock_redis_auth(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_setup(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_subscribe(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_webhook_lock_redis_script_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_webhook_lock_redis_message(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_webhook_lock_redis_ready(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_cmd_ready(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_subscribed(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_lost(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_unready(
    ngx_http_webhook_lock_redis_t *rd);
static void ngx_http_webhook_lock_redis_nothing(
    ngx_http_webhook_lock_conn_t *cn);

static void ngx_http_webhook_lock_redis_down(
    ngx_http_webhook_lock_conn_t *cn, const char *reason);
static void ngx_http_webhook_lock_redis_gone(
    ngx_http_webhook_lock_conn_t *cn, const char *reason);
static void ngx_http_webhook_lock_redis_fail(
    ngx_http_webhook_lock_conn_t *cn, const char *reason);
static void ngx_http_webhook_lock_redis_drop(
    ngx_http_webhook_lock_conn_t *cn, const char *reason);
static void ngx_http_webhook_lock_redis_close(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_schedule(
    ngx_http_webhook_lock_conn_t *cn);

static void ngx_http_webhook_lock_redis_close_handler(redisAsyncContext *ac,
    ngx_uint_t force);
static void ngx_http_webhook_lock_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_webhook_lock_redis_reconnect(ngx_event_t *ev);
static void ngx_http_webhook_lock_redis_drop_handler(ngx_event_t *ev);


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
 * Returns how many lock keys were ours.
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
    "      redis.call('SET', KEYS[i], 'done', 'PX', ARGV[3])\n"
    "    end\n"
    "  elseif v == ARGV[1] then\n"
    "    redis.call('DEL', KEYS[i])\n"
    "  end\n"
    "end\n"
    "return r\n";


/*
 * Locations that wait use the queue script instead, for all three: each
 * lock key has a list "<key>:q" of entries "<token> <deadline> <ttl>
 * <keys it takes> <channel>", in arrival order.  A request takes its keys
 * only when each is free and nobody is queued before it; else it queues
 * at the tail of every queue at once, so any two requests keep one order
 * in all the queues they share, and the first of them can always go on:
 * no deadlock.  A release hands the key to the first live entry: taking
 * one key alone, the key becomes its lock at once, valid after the rest
 * of the hold, and "T <token> <ms>" tells its worker; else (several
 * keys, or dedup marks to check) "W <token> <ms>" wakes it to take them
 * itself.  An entry past its deadline, or whose worker's channel has no
 * subscriber (PUBLISH says 0), is skipped.  Dedup marks are checked and
 * set when the request takes its keys, settled when it releases them.
 *
 * KEYS: the locks, their queues, the dedup marks.  ARGV[1]: "w", "r" or
 * "l", [2] token, [3] how many locks.  "w": [4] ttl, [5] wait left, [6]
 * most entries, [7] channel; returns {1, ms}: taken, usable after ms
 * (handed over within a hold); {0, ms}: queued, and if ms > 0, first in
 * line behind a key that expires in ms with nobody to hand it over;
 * {2, 0}: an id is being processed, {3, 0}: every id is done, and it
 * left the queues; {4, 0}: full, not queued.  "r": [4] how long a done
 * mark lives (0: the request failed), [5] hold; returns how many locks
 * were ours.  "l": [4] ttl.
 */

static const char  ngx_http_webhook_lock_queue_lua[] =
    "redis.replicate_commands()\n"
    "local op, tok, n = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local tm = redis.call('TIME')\n"
    "local now = tm[1] * 1000 + math.floor(tm[2] / 1000)\n"
    "local function find(q)\n"
    "  local es = redis.call('LRANGE', q, 0, -1)\n"
    "  for i = 1, #es do\n"
    "    if string.sub(es[i], 1, #tok + 1) == tok .. ' ' then\n"
    "      return i - 1, es[i]\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function pass(k, q, after, give)\n"
    "  local late = give and after or 0\n"
    "  while true do\n"
    "    local e = redis.call('LINDEX', q, 0)\n"
    "    if not e then return 'none' end\n"
    "    local t, dl, ttl, nk, ch =\n"
    "      string.match(e, '^(%x+) (%d+) (%d+) (%d+) (%S+)$')\n"
    "    if t == tok then return 'me' end\n"
    "    if t and tonumber(dl) > now + late then\n"
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
    "end\n"
    "if op == 'r' then\n"
    "  local done, hold, r = tonumber(ARGV[4]), tonumber(ARGV[5]), 0\n"
    "  for i = 2 * n + 1, #KEYS do\n"
    "    local v = redis.call('GET', KEYS[i])\n"
    "    if done > 0 then\n"
    "      if v ~= 'done' then\n"
    "        redis.call('SET', KEYS[i], 'done', 'PX', done)\n"
    "      end\n"
    "    elseif v == tok then\n"
    "      redis.call('DEL', KEYS[i])\n"
    "    end\n"
    "  end\n"
    "  for i = 1, n do\n"
    "    if redis.call('GET', KEYS[i]) == tok then\n"
    "      r = r + 1\n"
    "      if pass(KEYS[i], KEYS[n + i], hold, true) ~= 'given' then\n"
    "        free(KEYS[i], hold)\n"
    "      end\n"
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
    "  local p, e = find(q)\n"
    "  local v = redis.call('GET', k)\n"
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
    "for i = 1, n do\n"
    "  if not es[i] then\n"
    "    local e = tok .. ' ' .. now + wait .. ' ' .. ttl .. ' ' .. #KEYS - n\n"
    "              .. ' ' .. ARGV[7]\n"
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
    "    break\n"
    "  end\n"
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


/* one per worker */
static ngx_http_webhook_lock_redis_t  ngx_http_webhook_lock_redis;


ngx_int_t
ngx_http_webhook_lock_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_webhook_lock_redis_conf_t *rcf)
{
    u_char                          *p, md[SHA_DIGEST_LENGTH], id[8];
    ngx_uint_t                       i;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_script_t  *s;

    rd = &ngx_http_webhook_lock_redis;

    ngx_memzero(rd, sizeof(ngx_http_webhook_lock_redis_t));

    rd->conf = rcf;

    ngx_queue_init(&rd->deferred);
    ngx_queue_init(&rd->waiters);
    ngx_rbtree_init(&rd->tokens, &rd->sentinel, ngx_str_rbtree_insert_value);

    for (i = 0; i < sizeof(ngx_http_webhook_lock_scripts)
                    / sizeof(ngx_http_webhook_lock_scripts[0]); i++)
    {
        s = ngx_http_webhook_lock_scripts[i];
        SHA1(s->text.data, s->text.len, md);
        ngx_hex_dump(s->sha, md, SHA_DIGEST_LENGTH);
    }

    rd->fail.handler = ngx_http_webhook_lock_redis_fail_handler;
    rd->fail.data = rd;
    rd->fail.log = cycle->log;

    ngx_http_webhook_lock_redis_conn_init(&rd->cmd, cycle->log, "",
                                          ngx_http_webhook_lock_redis_setup,
                                          ngx_http_webhook_lock_redis_cmd_ready,
                                          ngx_http_webhook_lock_redis_lost);

    rd->active = 1;

    /* a Redis down at start is no error: we keep trying */

    ngx_http_webhook_lock_redis_connect(&rd->cmd);

    if (!rcf->queue) {
        return NGX_OK;
    }

    /* unique to this worker of this instance, whatever shares the Redis */

    if (RAND_bytes(id, sizeof(id)) != 1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0, "RAND_bytes() failed");
        return NGX_ERROR;
    }

    rd->channel.data = ngx_pnalloc(cycle->pool,
                                   NGX_HTTP_WEBHOOK_LOCK_CHANNEL_LEN);
    if (rd->channel.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(rd->channel.data, "webhook_lock:", 13);
    p = ngx_hex_dump(p, id, sizeof(id));
    p = ngx_sprintf(p, ":%P", ngx_pid);

    rd->channel.len = p - rd->channel.data;

    ngx_http_webhook_lock_redis_conn_init(&rd->sub, cycle->log,
                                      " subscriber",
                                      ngx_http_webhook_lock_redis_subscribe,
                                      ngx_http_webhook_lock_redis_subscribed,
                                      ngx_http_webhook_lock_redis_nothing);

    ngx_http_webhook_lock_redis_connect(&rd->sub);

    return NGX_OK;
}


void
ngx_http_webhook_lock_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                     *q;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_ticket_t  *t;
    ngx_http_webhook_lock_waiter_t  *w;

    rd = &ngx_http_webhook_lock_redis;

    if (!rd->active) {
        return;
    }

    /*
     * The requests are gone, or about to be without running again:
     * pending handlers are not called, tickets and waiters only freed.
     */

    rd->exiting = 1;

    if (rd->fail.posted) {
        ngx_delete_posted_event(&rd->fail);
    }

    while (!ngx_queue_empty(&rd->waiters)) {
        q = ngx_queue_head(&rd->waiters);
        ngx_queue_remove(q);

        w = ngx_queue_data(q, ngx_http_webhook_lock_waiter_t, queue);

        if (w->wait.timer_set) {
            ngx_del_timer(&w->wait);
        }

        if (w->timer.timer_set) {
            ngx_del_timer(&w->timer);
        }

        ngx_free(w);
    }

    if (rd->cmd.reconnect.timer_set) {
        ngx_del_timer(&rd->cmd.reconnect);
    }

    if (rd->sub.reconnect.timer_set) {
        ngx_del_timer(&rd->sub.reconnect);
    }

    ngx_http_webhook_lock_redis_close(&rd->cmd);
    ngx_http_webhook_lock_redis_close(&rd->sub);

    while (!ngx_queue_empty(&rd->deferred)) {
        q = ngx_queue_head(&rd->deferred);
        ngx_queue_remove(q);

        t = ngx_queue_data(q, ngx_http_webhook_lock_ticket_t, queue);
        ngx_free(t);
    }

    rd->ndeferred = 0;
    rd->active = 0;
}


ngx_http_webhook_lock_ticket_t *
ngx_http_webhook_lock_redis_acquire(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token, ngx_msec_t ttl,
    ngx_http_webhook_lock_reply_pt handler, void *data)
{
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_ticket_t  *t;

    rd = &ngx_http_webhook_lock_redis;

    /* not ready (down, connecting, backing off): nobody waits for it */

    if (rd->cmd.state != NGX_HTTP_WEBHOOK_LOCK_REDIS_READY || nkeys == 0) {
        return NULL;
    }

    if (ngx_http_webhook_lock_redis_overloaded(rd)) {
        return NULL;
    }

    t = ngx_http_webhook_lock_redis_create((nkeys == 1 && nmarks == 0)
                                           ? NGX_HTTP_WEBHOOK_LOCK_CMD_SET
                                           : NGX_HTTP_WEBHOOK_LOCK_CMD_ACQUIRE,
                                           keys, nkeys, marks, nmarks, token,
                                           ttl, 0, 0, 0);
    if (t == NULL) {
        return NULL;
    }

    t->handler = handler;
    t->data = data;

    if (ngx_http_webhook_lock_redis_send(rd, t) != NGX_OK) {
        ngx_free(t);
        return NULL;
    }

    return t;
}


ngx_int_t
ngx_http_webhook_lock_redis_release(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token, ngx_msec_t hold,
    ngx_msec_t done)
{
    return ngx_http_webhook_lock_redis_give(NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE,
                                            keys, nkeys, marks, nmarks, token,
                                            hold, done);
}


ngx_int_t
ngx_http_webhook_lock_redis_handoff(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token, ngx_msec_t hold,
    ngx_msec_t done)
{
    return ngx_http_webhook_lock_redis_give(NGX_HTTP_WEBHOOK_LOCK_CMD_HANDOFF,
                                            keys, nkeys, marks, nmarks, token,
                                            hold, done);
}


void
ngx_http_webhook_lock_redis_orphan(ngx_http_webhook_lock_ticket_t *t)
{
    t->handler = NULL;
}


static ngx_int_t
ngx_http_webhook_lock_redis_overloaded(ngx_http_webhook_lock_redis_t *rd)
{
    if (rd->pending < rd->conf->max_pending) {
        return 0;
    }

    if (rd->full != ngx_time()) {
        rd->full = ngx_time();
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis %V: %ui commands pending, max_pending reached",
                      &rd->conf->name, rd->pending);
    }

    return 1;
}


/*
 * A release, handoff or leave: nobody waits for the answer.  While Redis
 * is away it waits (max_pending of them at most) and goes out once it is
 * back, with what is left of its hold.
 */

static ngx_int_t
ngx_http_webhook_lock_redis_give(ngx_http_webhook_lock_command_e command,
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks,
    ngx_str_t *token, ngx_msec_t ms, ngx_msec_t done)
{
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_ticket_t  *t;

    rd = &ngx_http_webhook_lock_redis;

    if (!rd->active || rd->exiting || nkeys == 0) {
        return NGX_ERROR;
    }

    /* not bounded by max_pending: each follows an acquire that was */

    t = ngx_http_webhook_lock_redis_create(command, keys, nkeys, marks,
                                           nmarks, token, ms, done, 0, 0);
    if (t == NULL) {
        return NGX_ERROR;
    }

    if (rd->cmd.state == NGX_HTTP_WEBHOOK_LOCK_REDIS_READY
        && ngx_http_webhook_lock_redis_send(rd, t) == NGX_OK)
    {
        return NGX_OK;
    }

    /* Redis is away: the command goes out once it is back */

    t->start = ngx_current_msec;

    return ngx_http_webhook_lock_redis_defer(rd, t);
}


/*
 * The arguments, in one allocation with the ticket:
 *
 *   SET key token NX PX ttl
 *   EVALSHA acquire|release N key... token ttl|hold
 *   EVALSHA dedup|settle N+M key... mark... token N [done] ttl|hold
 *   EVALSHA queue 2N+M key... key:q... mark... w token N ttl wait max
 *       channel
 *   EVALSHA queue 2N+M key... key:q... mark... r token N done hold
 *   EVALSHA queue 2N key... key:q... l token N ttl
 *
 * A resend rewrites the last argument, the hold of a release: it is the
 * last number in the buffer too, with room for NGX_INT_T_LEN.
 */

static ngx_http_webhook_lock_ticket_t *
ngx_http_webhook_lock_redis_create(ngx_http_webhook_lock_command_e command,
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks,
    ngx_str_t *token, ngx_msec_t ms, ngx_msec_t done, ngx_msec_t wait,
    ngx_uint_t max)
{
    int                              argc, n;
    u_char                          *p;
    size_t                           size;
    ngx_str_t                       *src, *channel;
    ngx_uint_t                       i, queue;
    ngx_http_webhook_lock_script_t  *s;
    ngx_http_webhook_lock_ticket_t  *t;

    queue = (command >= NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT);

    switch (command) {

    case NGX_HTTP_WEBHOOK_LOCK_CMD_SET:
        argc = 6;
        break;

    case NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT:
        argc = (int) (2 * nkeys + nmarks) + 10;
        break;

    case NGX_HTTP_WEBHOOK_LOCK_CMD_HANDOFF:
        argc = (int) (2 * nkeys + nmarks) + 8;
        break;

    case NGX_HTTP_WEBHOOK_LOCK_CMD_LEAVE:
        argc = (int) (2 * nkeys + nmarks) + 7;
        break;

    default: /* ACQUIRE, RELEASE */
        argc = (int) (nkeys + nmarks) + 5;

        if (nmarks) {
            /* how many keys are locks; a release adds the "done" time */
            argc += (command == NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE) ? 2 : 1;
        }

        break;
    }

    /* one allocation: the ticket, keys, argv, argvlen, then the bytes */

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

    n = 0;

    if (command == NGX_HTTP_WEBHOOK_LOCK_CMD_SET) {
        ngx_http_webhook_lock_redis_arg(t, n++, "SET", 3);
        ngx_http_webhook_lock_redis_arg(t, n++, t->keys[0].data,
                                        t->keys[0].len);
        ngx_http_webhook_lock_redis_arg(t, n++, t->token.data, t->token.len);
        ngx_http_webhook_lock_redis_arg(t, n++, "NX", 2);
        ngx_http_webhook_lock_redis_arg(t, n++, "PX", 2);
        p = ngx_http_webhook_lock_redis_number(t, n++, p, ms);

    } else {
        if (queue) {
            s = &ngx_http_webhook_lock_queue_script;

        } else if (command == NGX_HTTP_WEBHOOK_LOCK_CMD_ACQUIRE) {
            s = nmarks ? &ngx_http_webhook_lock_dedup_script
                       : &ngx_http_webhook_lock_acquire_script;

        } else {
            s = nmarks ? &ngx_http_webhook_lock_settle_script
                       : &ngx_http_webhook_lock_release_script;
        }

        ngx_http_webhook_lock_redis_arg(t, n++, "EVALSHA", 7);
        ngx_http_webhook_lock_redis_arg(t, n++, s->sha, sizeof(s->sha));
        p = ngx_http_webhook_lock_redis_number(t, n++, p,
                                               (queue ? 2 * nkeys : nkeys)
                                               + nmarks);

        for (i = 0; i < nkeys; i++) {
            ngx_http_webhook_lock_redis_arg(t, n++, t->keys[i].data,
                                            t->keys[i].len);
        }

        if (queue) {
            for (i = 0; i < nkeys; i++) {
                ngx_http_webhook_lock_redis_arg(t, n++, p, keys[i].len + 2);
                p = ngx_cpymem(p, keys[i].data, keys[i].len);
                p = ngx_cpymem(p, ":q", 2);
            }
        }

        for (i = nkeys; i < nkeys + nmarks; i++) {
            ngx_http_webhook_lock_redis_arg(t, n++, t->keys[i].data,
                                            t->keys[i].len);
        }

        if (command == NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT) {
            ngx_http_webhook_lock_redis_arg(t, n++, "w", 1);

        } else if (command == NGX_HTTP_WEBHOOK_LOCK_CMD_HANDOFF) {
            ngx_http_webhook_lock_redis_arg(t, n++, "r", 1);

        } else if (command == NGX_HTTP_WEBHOOK_LOCK_CMD_LEAVE) {
            ngx_http_webhook_lock_redis_arg(t, n++, "l", 1);
        }

        ngx_http_webhook_lock_redis_arg(t, n++, t->token.data, t->token.len);

        if (queue || nmarks) {
            p = ngx_http_webhook_lock_redis_number(t, n++, p, nkeys);
        }

        if (command == NGX_HTTP_WEBHOOK_LOCK_CMD_HANDOFF
            || (command == NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE && nmarks))
        {
            p = ngx_http_webhook_lock_redis_number(t, n++, p, done);
        }

        p = ngx_http_webhook_lock_redis_number(t, n++, p, ms);

        if (command == NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT) {
            p = ngx_http_webhook_lock_redis_number(t, n++, p, wait);
            p = ngx_http_webhook_lock_redis_number(t, n++, p, max);

            channel = &ngx_http_webhook_lock_redis.channel;
            ngx_http_webhook_lock_redis_arg(t, n++, channel->data,
                                            channel->len);
        }

        t->script = s;
    }

    t->argc = argc;
    t->command = command;
    t->ms = ms;
    t->nkeys = nkeys;
    t->nmarks = nmarks;

    /*
     * Not cancelable, on purpose: a graceful shutdown then waits (at most
     * "timeout") for the commands in flight, so a request waiting for its
     * lock is answered and the releases of the worker's last requests are
     * written and done, instead of the worker exiting under them.
     */

    t->timer.handler = ngx_http_webhook_lock_redis_timeout;
    t->timer.data = t;
    t->timer.log = ngx_cycle->log;

    return t;
}


/* a number argument, written at p: returns the end */

static u_char *
ngx_http_webhook_lock_redis_number(ngx_http_webhook_lock_ticket_t *t, int n,
    u_char *p, ngx_uint_t value)
{
    u_char  *last;

    last = ngx_sprintf(p, "%ui", value);

    ngx_http_webhook_lock_redis_arg(t, n, p, last - p);

    return last;
}


static ngx_inline void
ngx_http_webhook_lock_redis_arg(ngx_http_webhook_lock_ticket_t *t, int n,
    const void *data, size_t len)
{
    t->argv[n] = data;
    t->argvlen[n] = len;
}


static ngx_int_t
ngx_http_webhook_lock_redis_send(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_ticket_t *t)
{
    /* queued: the adapter writes everything queued in this loop pass */

    if (redisAsyncCommandArgv(rd->cmd.ac, ngx_http_webhook_lock_redis_reply,
                              t, t->argc, t->argv, t->argvlen)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    t->start = ngx_current_msec;

    ngx_add_timer(&t->timer, rd->conf->timeout);

    rd->pending++;

    ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_COMMANDS,
                                   1);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis %s keys:%ui ms:%M pending:%ui",
                   t->argv[0], t->nkeys, t->ms, rd->pending);

    return NGX_OK;
}


/*
 * A release waits here while Redis is away: a lock given back late is
 * better than one left to its ttl.  Safe at any time, since it only
 * touches keys that still hold the request's own token.
 */

static ngx_int_t
ngx_http_webhook_lock_redis_defer(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_ticket_t *t)
{
    if (rd->exiting || rd->ndeferred >= rd->conf->max_pending) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "webhook redis release dropped");
        ngx_free(t);
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&rd->deferred, &t->queue);
    rd->ndeferred++;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis release deferred, %ui waiting",
                   rd->ndeferred);

    return NGX_OK;
}


static void
ngx_http_webhook_lock_redis_resend(ngx_http_webhook_lock_redis_t *rd)
{
    u_char                          *p;
    ngx_msec_t                       elapsed;
    ngx_queue_t                     *q;
    ngx_http_webhook_lock_ticket_t  *t;

    while (!ngx_queue_empty(&rd->deferred)) {
        q = ngx_queue_head(&rd->deferred);
        ngx_queue_remove(q);
        rd->ndeferred--;

        t = ngx_queue_data(q, ngx_http_webhook_lock_ticket_t, queue);

        if (t->expire
            && (ngx_msec_int_t) (ngx_current_msec - t->expire) >= 0)
        {
            /* the keys expired meanwhile */
            ngx_free(t);
            continue;
        }

        /* what is left of the hold, counted from when it was asked for */

        if (t->command != NGX_HTTP_WEBHOOK_LOCK_CMD_LEAVE) {
            elapsed = ngx_current_msec - t->start;
            t->ms = (t->ms > elapsed) ? t->ms - elapsed : 0;

            p = (u_char *) t->argv[t->argc - 1];
            t->argvlen[t->argc - 1] = ngx_sprintf(p, "%M", t->ms) - p;
        }

        if (ngx_http_webhook_lock_redis_send(rd, t) != NGX_OK) {
            ngx_free(t);
        }
    }
}


static void
ngx_http_webhook_lock_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_webhook_lock_ticket_t *t = privdata;

    ngx_int_t                        rc;
    redisReply                      *reply;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_reply_pt   handler;
    ngx_http_webhook_lock_ticket_t  *rt;

    rd = &ngx_http_webhook_lock_redis;
    reply = r;

    /* after a SCRIPT FLUSH or a Redis restart: once more, as EVAL */

    if (reply != NULL
        && reply->type == REDIS_REPLY_ERROR
        && t->script != NULL
        && !t->retried
        && reply->len >= sizeof("NOSCRIPT") - 1
        && ngx_strncmp(reply->str, "NOSCRIPT", sizeof("NOSCRIPT") - 1) == 0
        && ngx_http_webhook_lock_redis_eval(ac, t) == NGX_OK)
    {
        return;
    }

    rc = ngx_http_webhook_lock_redis_result(t, reply);

    if (rc == NGX_ERROR) {
        ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_ERRORS,
                                       1);
    }

    if (t->timer.timer_set) {
        ngx_del_timer(&t->timer);
    }

    rd->pending--;

    handler = rd->exiting ? NULL : t->handler;

    /* the handler may orphan its own ticket: harmless, t is still here */

    t->handler = NULL;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis reply: %i, %s, pending:%ui",
                   rc, handler ? "handled" : "unhandled", rd->pending);

    if (handler) {
        handler(t->data, rc);
    }

    /* a wait leaves the queue by itself when it ends without the lock */

    if (rd->exiting || t->command == NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT) {
        ngx_free(t);
        return;
    }

    if (reply == NULL) {

        /*
         * The connection went with the command in it, run or not: a
         * release is tried again, an acquire undone, once Redis is back.
         */

        if (t->command >= NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE) {
            (void) ngx_http_webhook_lock_redis_defer(rd, t);
            return;
        }

        rt = ngx_http_webhook_lock_redis_create(
                                         NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE,
                                         t->keys, t->nkeys,
                                         t->keys + t->nkeys, t->nmarks,
                                         &t->token, 0, 0, 0, 0);
        if (rt) {
            rt->start = t->start;
            rt->expire = t->start + t->ms;
            (void) ngx_http_webhook_lock_redis_defer(rd, rt);
        }

    } else if (handler == NULL
               && rc == 1
               && t->command < NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE)
    {
        /*
         * Taken for a request that is gone: given back at once, behind
         * the acquire on the same connection, not after the ttl.
         */

        (void) ngx_http_webhook_lock_redis_release(t->keys, t->nkeys,
                                                   t->keys + t->nkeys,
                                                   t->nmarks, &t->token, 0,
                                                   0);
    }

    ngx_free(t);
}


static ngx_int_t
ngx_http_webhook_lock_redis_eval(redisAsyncContext *ac,
    ngx_http_webhook_lock_ticket_t *t)
{
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;

    if (ac != rd->cmd.ac
        || rd->cmd.state != NGX_HTTP_WEBHOOK_LOCK_REDIS_READY)
    {
        return NGX_ERROR;
    }

    t->argv[0] = "EVAL";
    t->argvlen[0] = sizeof("EVAL") - 1;
    t->argv[1] = (const char *) t->script->text.data;
    t->argvlen[1] = t->script->text.len;

    t->retried = 1;

    if (redisAsyncCommandArgv(ac, ngx_http_webhook_lock_redis_reply, t,
                              t->argc, t->argv, t->argvlen)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_COMMANDS,
                                   1);

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis NOSCRIPT, EVAL");

    return NGX_OK;
}


static ngx_int_t
ngx_http_webhook_lock_redis_result(ngx_http_webhook_lock_ticket_t *t,
    redisReply *reply)
{
    redisReply                     **e;
    ngx_http_webhook_lock_redis_t   *rd;

    if (reply == NULL) {
        /* the context went away; that is logged where it happened */
        return NGX_ERROR;
    }

    rd = &ngx_http_webhook_lock_redis;

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
                      "redis %V: \"%s\" failed: %*s", &rd->conf->name,
                      t->argv[0], (size_t) reply->len, reply->str);
        return NGX_ERROR;

    default:
        break;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis %V: unexpected reply of type %d to \"%s\"",
                  &rd->conf->name, reply->type, t->argv[0]);

    return NGX_ERROR;
}


static void
ngx_http_webhook_lock_redis_timeout(ngx_event_t *ev)
{
    void                            *data;
    ngx_http_webhook_lock_ticket_t  *t;
    ngx_http_webhook_lock_reply_pt   handler;

    t = ev->data;

    handler = t->handler;
    data = t->data;

    /* answered now; the ticket stays until hiredis lets it go */

    t->handler = NULL;

    ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_TIMEOUTS,
                                   1);

    /*
     * Redis hangs: everything in flight fails now rather than queueing
     * behind it, and a new connection starts afresh.  Freeing the
     * context runs every callback, this ticket's too, which frees it.
     */

    ngx_http_webhook_lock_redis_drop(&ngx_http_webhook_lock_redis.cmd,
                                     "command timed out");

    if (handler) {
        handler(data, NGX_ERROR);
    }
}


ngx_http_webhook_lock_waiter_t *
ngx_http_webhook_lock_redis_wait(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token, ngx_msec_t ttl,
    ngx_msec_t wait, ngx_uint_t max, ngx_http_webhook_lock_reply_pt handler,
    void *data)
{
    u_char                          *p;
    size_t                           size;
    ngx_str_t                       *src;
    ngx_uint_t                       i;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_waiter_t  *w;

    rd = &ngx_http_webhook_lock_redis;

    if (rd->cmd.state != NGX_HTTP_WEBHOOK_LOCK_REDIS_READY
        || !rd->conf->queue
        || nkeys == 0)
    {
        return NULL;
    }

    if (ngx_http_webhook_lock_redis_overloaded(rd)) {
        return NULL;
    }

    size = ngx_align(sizeof(ngx_http_webhook_lock_waiter_t), sizeof(void *))
           + (nkeys + nmarks) * sizeof(ngx_str_t) + token->len;

    for (i = 0; i < nkeys; i++) {
        size += keys[i].len;
    }

    for (i = 0; i < nmarks; i++) {
        size += marks[i].len;
    }

    w = ngx_alloc(size, ngx_cycle->log);
    if (w == NULL) {
        return NULL;
    }

    ngx_memzero(w, sizeof(ngx_http_webhook_lock_waiter_t));

    w->keys = (ngx_str_t *) ((u_char *) w
                  + ngx_align(sizeof(ngx_http_webhook_lock_waiter_t),
                              sizeof(void *)));
    p = (u_char *) (w->keys + nkeys + nmarks);

    for (i = 0; i < nkeys + nmarks; i++) {
        src = (i < nkeys) ? &keys[i] : &marks[i - nkeys];

        w->keys[i].len = src->len;
        w->keys[i].data = p;
        p = ngx_cpymem(p, src->data, src->len);
    }

    w->node.str.len = token->len;
    w->node.str.data = p;
    ngx_memcpy(p, token->data, token->len);
    w->node.node.key = ngx_crc32_short(p, token->len);

    w->nkeys = nkeys;
    w->nmarks = nmarks;
    w->handler = handler;
    w->data = data;
    w->start = ngx_current_msec;
    w->deadline = ngx_current_msec + wait;
    w->ttl = ttl;
    w->max = max;

    /* a graceful shutdown lets the waiter have its answer first */

    w->wait.handler = ngx_http_webhook_lock_redis_wait_handler;
    w->wait.data = w;
    w->wait.log = ngx_cycle->log;

    w->timer.handler = ngx_http_webhook_lock_redis_timer_handler;
    w->timer.data = w;
    w->timer.log = ngx_cycle->log;
    w->timer.cancelable = 1;

    if (ngx_http_webhook_lock_redis_ask(rd, w) != NGX_OK) {
        ngx_free(w);
        return NULL;
    }

    ngx_rbtree_insert(&rd->tokens, &w->node.node);
    ngx_queue_insert_tail(&rd->waiters, &w->queue);

    ngx_add_timer(&w->wait, wait);

    return w;
}


ngx_msec_t
ngx_http_webhook_lock_redis_round_trip(ngx_http_webhook_lock_waiter_t *w)
{
    return w->answered ? w->answered - w->start
                       : ngx_current_msec - w->start;
}


void
ngx_http_webhook_lock_redis_leave(ngx_http_webhook_lock_waiter_t *w)
{
    w->handler = NULL;

    ngx_http_webhook_lock_redis_finish(w, NGX_HTTP_WEBHOOK_LOCK_REDIS_BUSY);
}


/* take or queue; asked again, it keeps its place */

static ngx_int_t
ngx_http_webhook_lock_redis_ask(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_waiter_t *w)
{
    ngx_msec_t                       left;
    ngx_http_webhook_lock_ticket_t  *t;

    /* what is left of the wait: the deadline of an entry made now */

    left = w->deadline - ngx_current_msec;

    if ((ngx_msec_int_t) left <= 0) {
        left = 1;
    }

    t = ngx_http_webhook_lock_redis_create(NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT,
                                           w->keys, w->nkeys,
                                           w->keys + w->nkeys, w->nmarks,
                                           &w->node.str, w->ttl, 0, left,
                                           w->max);
    if (t == NULL) {
        return NGX_ERROR;
    }

    t->handler = ngx_http_webhook_lock_redis_answer;
    t->data = w;

    if (ngx_http_webhook_lock_redis_send(rd, t) != NGX_OK) {
        ngx_free(t);
        return NGX_ERROR;
    }

    w->ticket = t;

    return NGX_OK;
}


static void
ngx_http_webhook_lock_redis_answer(void *data, ngx_int_t rc)
{
    ngx_http_webhook_lock_waiter_t *w = data;

    ngx_msec_t                       delay;
    ngx_http_webhook_lock_ticket_t  *t;

    /* the ticket is freed once this returns */

    t = w->ticket;
    w->ticket = NULL;

    if (!w->answered) {
        w->answered = ngx_current_msec;
    }

    switch (rc) {

    case 1:
        ngx_http_webhook_lock_redis_take(w, t->hint);
        return;

    case 0:
        w->queued = 1;
        break;

    case 2:
        ngx_http_webhook_lock_redis_finish(w,
                                      NGX_HTTP_WEBHOOK_LOCK_REDIS_PROCESSING);
        return;

    case 3:
        ngx_http_webhook_lock_redis_finish(w,
                                       NGX_HTTP_WEBHOOK_LOCK_REDIS_DUPLICATE);
        return;

    case 4:
        ngx_http_webhook_lock_redis_finish(w, w->queued
                                           ? NGX_HTTP_WEBHOOK_LOCK_REDIS_BUSY
                                           : NGX_HTTP_WEBHOOK_LOCK_REDIS_FULL);
        return;

    default: /* NGX_ERROR */
        ngx_http_webhook_lock_redis_finish(w, NGX_ERROR);
        return;
    }

    /* queued: ask again when woken, when the key in the way expires, or */

    delay = NGX_HTTP_WEBHOOK_LOCK_POLL * 3 / 4
            + (ngx_msec_t) ngx_random() % (NGX_HTTP_WEBHOOK_LOCK_POLL / 2);

    if (t->hint) {
        delay = ngx_min(delay, t->hint + 1);
    }

    if (w->again) {
        w->again = 0;
        delay = ngx_min(delay, w->after);
    }

    ngx_http_webhook_lock_redis_sooner(w, delay);
}


static void
ngx_http_webhook_lock_redis_take(ngx_http_webhook_lock_waiter_t *w,
    ngx_msec_t after)
{
    w->taken = 1;

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    if (after == 0) {
        ngx_http_webhook_lock_redis_finish(w, w->queued
                                           ? NGX_HTTP_WEBHOOK_LOCK_REDIS_WAITED
                                           : NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN);
        return;
    }

    /* handed over within the previous holder's hold: ours once it ends */

    ngx_add_timer(&w->timer, after);
}


static void
ngx_http_webhook_lock_redis_sooner(ngx_http_webhook_lock_waiter_t *w,
    ngx_msec_t delay)
{
    if (w->timer.timer_set) {
        if ((ngx_msec_int_t) (w->timer.timer.key - ngx_current_msec)
            <= (ngx_msec_int_t) delay)
        {
            return;
        }

        /* not ngx_add_timer() alone: it keeps a timer moved by < 300 ms */

        ngx_del_timer(&w->timer);
    }

    ngx_add_timer(&w->timer, delay);
}


/*
 * The end of a wait, whatever ended it.  Without the lock, a waiter that
 * may be queued leaves, which also passes on a lock handed to it.
 */

static void
ngx_http_webhook_lock_redis_finish(ngx_http_webhook_lock_waiter_t *w,
    ngx_int_t rc)
{
    ngx_uint_t                       leave;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_reply_pt   handler;

    rd = &ngx_http_webhook_lock_redis;

    ngx_rbtree_delete(&rd->tokens, &w->node.node);
    ngx_queue_remove(&w->queue);

    if (w->wait.timer_set) {
        ngx_del_timer(&w->wait);
    }

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    leave = w->queued || w->taken || rc == NGX_ERROR;

    if (w->ticket) {
        /* its answer comes to nobody: the leave follows it */
        w->ticket->handler = NULL;
        w->ticket = NULL;
        leave = 1;
    }

    /* the lock is its own now, or the script took it out of the queues */

    if (rc == NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN
        || rc == NGX_HTTP_WEBHOOK_LOCK_REDIS_WAITED
        || rc == NGX_HTTP_WEBHOOK_LOCK_REDIS_PROCESSING
        || rc == NGX_HTTP_WEBHOOK_LOCK_REDIS_DUPLICATE)
    {
        leave = 0;
    }

    if (leave) {
        (void) ngx_http_webhook_lock_redis_give(
                                       NGX_HTTP_WEBHOOK_LOCK_CMD_LEAVE,
                                       w->keys, w->nkeys, NULL, 0,
                                       &w->node.str, w->ttl, 0);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis wait done: %i, leave:%ui", rc, leave);

    handler = rd->exiting ? NULL : w->handler;

    if (handler) {
        handler(w->data, rc);
    }

    ngx_free(w);
}


/* "T <token> <ms>": the lock is yours after ms; "W ...": ask within ms */

static void
ngx_http_webhook_lock_redis_wake(ngx_http_webhook_lock_redis_t *rd,
    u_char *p, size_t len)
{
    u_char                          *last, *sp;
    ngx_int_t                        ms;
    ngx_str_t                        token;
    ngx_str_node_t                  *node;
    ngx_http_webhook_lock_waiter_t  *w;

    last = p + len;

    if (len < 5 || (p[0] != 'T' && p[0] != 'W') || p[1] != ' ') {
        goto invalid;
    }

    token.data = p + 2;

    sp = ngx_strlchr(token.data, last, ' ');
    if (sp == NULL) {
        goto invalid;
    }

    token.len = sp - token.data;

    ms = ngx_atoi(sp + 1, last - sp - 1);
    if (ms == NGX_ERROR) {
        goto invalid;
    }

    node = ngx_str_rbtree_lookup(&rd->tokens, &token,
                                 ngx_crc32_short(token.data, token.len));

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis wake: %c %V %i%s", p[0], &token, ms,
                   node ? "" : ", not here");

    /* gone: its leave, sent or deferred, passes the lock on */

    if (node == NULL) {
        return;
    }

    w = (ngx_http_webhook_lock_waiter_t *) node;

    if (w->taken) {
        return;
    }

    if (p[0] == 'T') {
        if (!w->answered) {
            w->answered = ngx_current_msec;
        }

        if (w->ticket) {
            /* asking again meanwhile: whatever it hears is older */
            w->ticket->handler = NULL;
            w->ticket = NULL;
        }

        w->queued = 1;

        ngx_http_webhook_lock_redis_take(w, ms);
        return;
    }

    if (w->ticket) {
        w->after = w->again ? ngx_min(w->after, (ngx_msec_t) ms)
                            : (ngx_msec_t) ms;
        w->again = 1;
        return;
    }

    ngx_http_webhook_lock_redis_sooner(w, ms);

    return;

invalid:

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis %V: unexpected message \"%*s\" on \"%V\"",
                  &rd->conf->name, ngx_min(len, 80), p, &rd->channel);
}


static void
ngx_http_webhook_lock_redis_wait_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_redis_finish(ev->data,
                                       NGX_HTTP_WEBHOOK_LOCK_REDIS_BUSY);
}


static void
ngx_http_webhook_lock_redis_timer_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_waiter_t *w = ev->data;

    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;

    if (w->taken) {
        ngx_http_webhook_lock_redis_finish(w, w->queued
                                           ? NGX_HTTP_WEBHOOK_LOCK_REDIS_WAITED
                                           : NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN);
        return;
    }

    if (w->ticket) {
        return;
    }

    if (rd->cmd.state != NGX_HTTP_WEBHOOK_LOCK_REDIS_READY) {
        ngx_http_webhook_lock_redis_finish(w, NGX_ERROR);
        return;
    }

    if (rd->pending >= rd->conf->max_pending) {
        ngx_add_timer(&w->timer, NGX_HTTP_WEBHOOK_LOCK_POLL);
        return;
    }

    if (ngx_http_webhook_lock_redis_ask(rd, w) != NGX_OK) {
        ngx_http_webhook_lock_redis_finish(w, NGX_ERROR);
    }
}


/* the command connection went away: whoever waits follows the policy */

static void
ngx_http_webhook_lock_redis_fail_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_redis_t *rd = ev->data;

    ngx_queue_t                     *q;
    ngx_http_webhook_lock_waiter_t  *w;

    if (rd->cmd.state == NGX_HTTP_WEBHOOK_LOCK_REDIS_READY) {
        return;
    }

    while (!ngx_queue_empty(&rd->waiters)) {
        q = ngx_queue_head(&rd->waiters);
        w = ngx_queue_data(q, ngx_http_webhook_lock_waiter_t, queue);

        ngx_http_webhook_lock_redis_finish(w, NGX_ERROR);
    }
}


static void
ngx_http_webhook_lock_redis_conn_init(ngx_http_webhook_lock_conn_t *cn,
    ngx_log_t *log, const char *role, ngx_http_webhook_lock_conn_pt init,
    ngx_http_webhook_lock_conn_pt ready, ngx_http_webhook_lock_conn_pt lost)
{
    cn->role = role;
    cn->backoff = NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MIN;
    cn->init = init;
    cn->ready_handler = ready;
    cn->lost_handler = lost;

    /* none of these may keep a worker from exiting */

    cn->connect.handler = ngx_http_webhook_lock_redis_connect_timeout;
    cn->connect.data = cn;
    cn->connect.log = log;
    cn->connect.cancelable = 1;

    cn->reconnect.handler = ngx_http_webhook_lock_redis_reconnect;
    cn->reconnect.data = cn;
    cn->reconnect.log = log;
    cn->reconnect.cancelable = 1;

    cn->drop.handler = ngx_http_webhook_lock_redis_drop_handler;
    cn->drop.data = cn;
    cn->drop.log = log;
}


static void
ngx_http_webhook_lock_redis_connect(ngx_http_webhook_lock_conn_t *cn)
{
    redisAsyncContext                   *ac;
    ngx_http_webhook_lock_redis_t       *rd;
    ngx_http_webhook_lock_redis_conf_t  *rcf;

    rd = &ngx_http_webhook_lock_redis;

    if (cn->ac != NULL || rd->exiting) {
        return;
    }

    rcf = rd->conf;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis%s connect to %V", cn->role, &rcf->name);

    /* non-blocking; host is an address or a path, nothing to resolve */

    if (rcf->port) {
        ac = redisAsyncConnect((const char *) rcf->host.data, rcf->port);

    } else {
        ac = redisAsyncConnectUnix((const char *) rcf->host.data);
    }

    if (ac == NULL) {
        ngx_http_webhook_lock_redis_down(cn, "cannot allocate a context");
        ngx_http_webhook_lock_redis_schedule(cn);
        return;
    }

    if (ac->err) {
        ngx_http_webhook_lock_redis_down(cn, ac->c.errstr);
        redisAsyncFree(ac);
        ngx_http_webhook_lock_redis_schedule(cn);
        return;
    }

    if (ngx_http_webhook_lock_hiredis_attach(ac, ngx_cycle->log) != NGX_OK) {
        ngx_http_webhook_lock_redis_down(cn, "cannot attach a connection");
        redisAsyncFree(ac);
        ngx_http_webhook_lock_redis_schedule(cn);
        return;
    }

    ngx_http_webhook_lock_hiredis_set_close(ac,
                                     ngx_http_webhook_lock_redis_close_handler);

    ac->data = cn;

    cn->ac = ac;
    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_CONNECTING;

    /* hiredis has no connect timeout of its own here: ours covers setup */

    ngx_add_timer(&cn->connect, rcf->connect_timeout);

    (void) redisAsyncSetDisconnectCallback(ac,
                                      ngx_http_webhook_lock_redis_disconnected);

    /* waits for the socket to become writable: the connect is done then */

    (void) redisAsyncSetConnectCallback(ac,
                                        ngx_http_webhook_lock_redis_connected);
}


static void
ngx_http_webhook_lock_redis_connected(const redisAsyncContext *ac,
    int status)
{
    ngx_http_webhook_lock_conn_t  *cn;

    cn = ac->data;

    if (ac != cn->ac) {
        return;
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns */
        ngx_http_webhook_lock_redis_gone(cn, ac->c.errstr);
        return;
    }

    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP;
    cn->setup = 0;

    cn->init(cn);
}


static void
ngx_http_webhook_lock_redis_disconnected(const redisAsyncContext *ac,
    int status)
{
    ngx_http_webhook_lock_conn_t  *cn;

    cn = ac->data;

    /* not the current context: we freed it, and said why */

    if (ac != cn->ac) {
        return;
    }

    ngx_http_webhook_lock_redis_gone(cn,
                                     (status == REDIS_OK
                                      || ac->c.errstr[0] == '\0')
                                     ? "connection closed" : ac->c.errstr);
}


static ngx_int_t
ngx_http_webhook_lock_redis_auth(ngx_http_webhook_lock_conn_t *cn)
{
    size_t                               argvlen[2];
    const char                          *argv[2];
    ngx_http_webhook_lock_redis_conf_t  *rcf;

    rcf = ngx_http_webhook_lock_redis.conf;

    if (rcf->password.len == 0) {
        return NGX_OK;
    }

    argv[0] = "AUTH";
    argvlen[0] = sizeof("AUTH") - 1;
    argv[1] = (const char *) rcf->password.data;
    argvlen[1] = rcf->password.len;

    if (redisAsyncCommandArgv(cn->ac, ngx_http_webhook_lock_redis_setup_reply,
                              "AUTH", 2, argv, argvlen)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    cn->setup++;

    return NGX_OK;
}


/*
 * Pipelined, before anything else on the connection: one round trip for
 * all of them.  Acquires wait for the replies (the state turns READY),
 * so a wrong password or a hung Redis fails requests at once instead of
 * making them wait behind the setup.
 */

static void
ngx_http_webhook_lock_redis_setup(ngx_http_webhook_lock_conn_t *cn)
{
    u_char                               db[NGX_INT_T_LEN];
    size_t                               argvlen[3];
    ngx_uint_t                           i;
    const char                          *argv[3];
    ngx_http_webhook_lock_script_t      *s;
    ngx_http_webhook_lock_redis_conf_t  *rcf;

    rcf = ngx_http_webhook_lock_redis.conf;

    if (ngx_http_webhook_lock_redis_auth(cn) != NGX_OK) {
        goto failed;
    }

    if (rcf->db) {
        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", rcf->db) - db;

        if (redisAsyncCommandArgv(cn->ac,
                                  ngx_http_webhook_lock_redis_setup_reply,
                                  "SELECT", 2, argv, argvlen)
            != REDIS_OK)
        {
            goto failed;
        }

        cn->setup++;
    }

    for (i = 0; i < sizeof(ngx_http_webhook_lock_scripts)
                    / sizeof(ngx_http_webhook_lock_scripts[0]); i++)
    {
        s = ngx_http_webhook_lock_scripts[i];

        /* the dedup and queue scripts only where a location uses them */

        if ((s->dedup && !rcf->dedup) || (s->queue && !rcf->queue)) {
            continue;
        }

        argv[0] = "SCRIPT";
        argvlen[0] = sizeof("SCRIPT") - 1;
        argv[1] = "LOAD";
        argvlen[1] = sizeof("LOAD") - 1;
        argv[2] = (const char *) s->text.data;
        argvlen[2] = s->text.len;

        if (redisAsyncCommandArgv(cn->ac,
                                  ngx_http_webhook_lock_redis_script_reply,
                                  s, 3, argv, argvlen)
            != REDIS_OK)
        {
            goto failed;
        }

        cn->setup++;
    }

    return;

failed:

    ngx_http_webhook_lock_redis_fail(cn, "cannot send the setup commands");
}


/*
 * Pub/sub is not per database: no SELECT.  The channel's callback gets
 * the subscription's confirmation, which makes the subscriber ready, and
 * then every message.
 */

static void
ngx_http_webhook_lock_redis_subscribe(ngx_http_webhook_lock_conn_t *cn)
{
    size_t                          argvlen[2];
    const char                     *argv[2];
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;

    if (ngx_http_webhook_lock_redis_auth(cn) != NGX_OK) {
        goto failed;
    }

    argv[0] = "SUBSCRIBE";
    argvlen[0] = sizeof("SUBSCRIBE") - 1;
    argv[1] = (const char *) rd->channel.data;
    argvlen[1] = rd->channel.len;

    if (redisAsyncCommandArgv(cn->ac, ngx_http_webhook_lock_redis_message,
                              NULL, 2, argv, argvlen)
        != REDIS_OK)
    {
        goto failed;
    }

    cn->setup++;

    return;

failed:

    ngx_http_webhook_lock_redis_fail(cn, "cannot send the setup commands");
}


static void
ngx_http_webhook_lock_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    char                          *name = privdata;

    u_char                        *p, reason[NGX_MAX_ERROR_STR];
    redisReply                    *reply;
    ngx_http_webhook_lock_conn_t  *cn;

    cn = ac->data;
    reply = r;

    /* NULL: the context is going away, which is logged where it happens */

    if (reply == NULL
        || ac != cn->ac
        || cn->state != NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP)
    {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* the error text only: never the password */

        p = ngx_snprintf(reason, sizeof(reason) - 1, "\"%s\" failed: %*s",
                         name, (size_t) reply->len, reply->str);
        *p = '\0';

        ngx_http_webhook_lock_redis_fail(cn, (char *) reason);
        return;
    }

    if (--cn->setup == 0) {
        ngx_http_webhook_lock_redis_ready(cn);
    }
}


static void
ngx_http_webhook_lock_redis_script_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_webhook_lock_script_t *s = privdata;

    redisReply                     *reply;
    ngx_http_webhook_lock_conn_t   *cn;
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;
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
                      &rd->conf->name, (size_t) reply->len, reply->str);

    } else if (reply->type != REDIS_REPLY_STRING
               || reply->len != sizeof(s->sha)
               || ngx_strncmp(reply->str, s->sha, sizeof(s->sha)) != 0)
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "redis %V: \"SCRIPT LOAD\" returned "
                      "an unexpected sha1", &rd->conf->name);
    }

    if (--cn->setup == 0) {
        ngx_http_webhook_lock_redis_ready(cn);
    }
}


/*
 * Everything on the subscriber: the confirmation of SUBSCRIBE, then
 * messages.  An error reply never gets here: hiredis takes it for the
 * server's farewell and drops the connection, with the text as reason.
 */

static void
ngx_http_webhook_lock_redis_message(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                     *reply, **e;
    ngx_http_webhook_lock_conn_t   *cn;
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;
    cn = ac->data;
    reply = r;

    if (reply == NULL || ac != cn->ac) {
        return;
    }

    e = reply->element;

    if (reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 3
        && e[0]->type == REDIS_REPLY_STRING)
    {
        if (e[0]->len == 7
            && ngx_strncmp(e[0]->str, "message", 7) == 0
            && e[2]->type == REDIS_REPLY_STRING)
        {
            ngx_http_webhook_lock_redis_wake(rd, (u_char *) e[2]->str,
                                             e[2]->len);
            return;
        }

        if (e[0]->len == 9 && ngx_strncmp(e[0]->str, "subscribe", 9) == 0) {
            if (cn->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP
                && --cn->setup == 0)
            {
                ngx_http_webhook_lock_redis_ready(cn);
            }

            return;
        }
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis %V: unexpected reply of type %d on \"%V\"",
                  &rd->conf->name, reply->type, &rd->channel);
}


static void
ngx_http_webhook_lock_redis_ready(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;

    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_READY;
    cn->backoff = NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MIN;

    if (cn->connect.timer_set) {
        ngx_del_timer(&cn->connect);
    }

    if (cn->down) {
        cn->down = 0;
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "redis %V%s is back", &rd->conf->name, cn->role);

    } else {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "webhook redis %V%s ready", &rd->conf->name,
                       cn->role);
    }

    cn->ready_handler(cn);
}


/* the command connection: counted, and the deferred releases go out */

static void
ngx_http_webhook_lock_redis_cmd_ready(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;

    rd->ready = 1;
    ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_CONNECTED,
                                   1);

    if (rd->lost) {
        rd->lost = 0;
        ngx_http_webhook_lock_stat_add(
                               NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_RECONNECTS, 1);
    }

    ngx_http_webhook_lock_redis_resend(rd);
}


/* wake-ups may have been missed meanwhile: every waiter asks once */

static void
ngx_http_webhook_lock_redis_subscribed(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_queue_t                     *q;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_waiter_t  *w;

    rd = &ngx_http_webhook_lock_redis;

    for (q = ngx_queue_head(&rd->waiters);
         q != ngx_queue_sentinel(&rd->waiters);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_http_webhook_lock_waiter_t, queue);

        if (w->ticket == NULL && !w->taken) {
            ngx_http_webhook_lock_redis_sooner(w, 0);
        }
    }
}


static void
ngx_http_webhook_lock_redis_lost(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;

    ngx_http_webhook_lock_redis_unready(rd);

    /* posted: this may run inside hiredis, or inside a waiter's handler */

    if (!rd->exiting
        && !ngx_queue_empty(&rd->waiters)
        && !rd->fail.posted)
    {
        ngx_post_event(&rd->fail, &ngx_posted_events);
    }
}


/* for webhook_status: this worker is connected no more */

static void
ngx_http_webhook_lock_redis_unready(ngx_http_webhook_lock_redis_t *rd)
{
    if (!rd->ready) {
        return;
    }

    rd->ready = 0;
    rd->lost = !rd->exiting;

    ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_CONNECTED,
                                   -1);
}


/* a subscriber lost: waiters keep asking now and then, nothing to do */

static void
ngx_http_webhook_lock_redis_nothing(ngx_http_webhook_lock_conn_t *cn)
{
}


/* once per outage, not once per retry; "is back" ends it */

static void
ngx_http_webhook_lock_redis_down(ngx_http_webhook_lock_conn_t *cn,
    const char *reason)
{
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;

    if (rd->exiting) {
        return;
    }

    if (cn->down) {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "webhook redis %V%s still down: %s",
                       &rd->conf->name, cn->role, reason);
        return;
    }

    cn->down = 1;

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis %V%s is unreachable: %s", &rd->conf->name,
                  cn->role, reason);
}


/* from hiredis's callbacks: the context is being freed by hiredis */

static void
ngx_http_webhook_lock_redis_gone(ngx_http_webhook_lock_conn_t *cn,
    const char *reason)
{
    cn->ac = NULL;
    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN;

    if (cn->connect.timer_set) {
        ngx_del_timer(&cn->connect);
    }

    if (cn->drop.posted) {
        ngx_delete_posted_event(&cn->drop);
    }

    ngx_http_webhook_lock_redis_down(cn, reason);
    ngx_http_webhook_lock_redis_schedule(cn);

    cn->lost_handler(cn);
}


/*
 * From inside a hiredis callback the context cannot be freed under
 * hiredis's feet: no more commands go to it, and a posted event frees it
 * once the callback has returned.
 */

static void
ngx_http_webhook_lock_redis_fail(ngx_http_webhook_lock_conn_t *cn,
    const char *reason)
{
    ngx_http_webhook_lock_redis_down(cn, reason);

    if (cn->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING) {
        return;
    }

    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING;

    ngx_post_event(&cn->drop, &ngx_posted_events);
}


/* outside hiredis callbacks: timers, posted events, shutdown */

static void
ngx_http_webhook_lock_redis_drop(ngx_http_webhook_lock_conn_t *cn,
    const char *reason)
{
    ngx_http_webhook_lock_redis_down(cn, reason);
    ngx_http_webhook_lock_redis_close(cn);
}


static void
ngx_http_webhook_lock_redis_close(ngx_http_webhook_lock_conn_t *cn)
{
    redisAsyncContext  *ac;

    ac = cn->ac;

    /* first: the callbacks below must find no context to send to */

    cn->ac = NULL;
    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN;

    if (cn->connect.timer_set) {
        ngx_del_timer(&cn->connect);
    }

    if (cn->drop.posted) {
        ngx_delete_posted_event(&cn->drop);
    }

    if (ac) {
        /* pending callbacks run with NULL, then the adapter's cleanup */
        redisAsyncFree(ac);

        cn->lost_handler(cn);
    }

    ngx_http_webhook_lock_redis_schedule(cn);
}


static void
ngx_http_webhook_lock_redis_schedule(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_msec_t  delay;

    if (ngx_http_webhook_lock_redis.exiting || cn->reconnect.timer_set) {
        return;
    }

    /* jitter keeps the workers from knocking all at once */

    delay = cn->backoff + (ngx_msec_t) ngx_random() % (cn->backoff / 4 + 1);

    cn->backoff = ngx_min(cn->backoff * 2, NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MAX);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis%s reconnect in %Mms", cn->role, delay);

    ngx_add_timer(&cn->reconnect, delay);
}


static void
ngx_http_webhook_lock_redis_close_handler(redisAsyncContext *ac,
    ngx_uint_t force)
{
    ngx_http_webhook_lock_conn_t   *cn;
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;
    cn = ac->data;

    if (ac != cn->ac) {
        return;
    }

    /*
     * A graceful shutdown waits for timers, never for connections: the
     * worker lives on while its requests do, and their releases (and
     * their waits' wake-ups) still need the connections.  exit_process
     * frees them.
     */

    if (!force) {
        return;
    }

    /* worker_shutdown_timeout: every request is being closed as well */

    rd->exiting = 1;

    ngx_http_webhook_lock_redis_close(&rd->cmd);
    ngx_http_webhook_lock_redis_close(&rd->sub);
}


static void
ngx_http_webhook_lock_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_webhook_lock_redis_drop(ev->data, "connect timed out");
}


static void
ngx_http_webhook_lock_redis_reconnect(ngx_event_t *ev)
{
    ngx_http_webhook_lock_redis_connect(ev->data);
}


static void
ngx_http_webhook_lock_redis_drop_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_conn_t *cn = ev->data;

    if (cn->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING) {
        ngx_http_webhook_lock_redis_close(cn);
    }
}
