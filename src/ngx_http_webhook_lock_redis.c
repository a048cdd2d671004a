
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <openssl/sha.h>

#include "ngx_http_webhook_lock_redis.h"
#include "ngx_http_webhook_lock_hiredis.h"
#include "ngx_http_webhook_lock_status.h"


#define NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MIN  50
#define NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MAX  2000


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
    NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE
} ngx_http_webhook_lock_command_e;


typedef struct {
    ngx_str_t                            text;
    u_char                               sha[SHA_DIGEST_LENGTH * 2];
    ngx_uint_t                           dedup;     /* loaded if used */
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
    ngx_msec_t                           ms;        /* ttl or hold */
    ngx_msec_t                           start;     /* sent or deferred */
    ngx_msec_t                           expire;    /* 0: not known */
    ngx_http_webhook_lock_script_t      *script;    /* NULL: SET */
    ngx_str_t                           *keys;      /* copies, then marks */
    ngx_uint_t                           nkeys;
    ngx_uint_t                           nmarks;    /* dedup marks */
    ngx_str_t                            token;
    int                                  argc;
    const char                         **argv;      /* for the EVAL retry */
    size_t                              *argvlen;
    unsigned                             retried:1;
};


typedef struct {
    ngx_http_webhook_lock_redis_conf_t  *conf;
    redisAsyncContext                   *ac;
    ngx_http_webhook_lock_redis_state_e  state;
    ngx_uint_t                           setup;     /* replies still due */
    ngx_uint_t                           pending;   /* live tickets */
    ngx_queue_t                          deferred;  /* releases to resend */
    ngx_uint_t                           ndeferred;
    ngx_msec_t                           backoff;
    time_t                               full;      /* max_pending logged */
    ngx_event_t                          connect;   /* connect_timeout */
    ngx_event_t                          reconnect;
    ngx_event_t                          drop;      /* posted */
    unsigned                             active:1;  /* init_process ran */
    unsigned                             down:1;    /* "unreachable" said */
    unsigned                             exiting:1;
    unsigned                             ready:1;   /* counted connected */
    unsigned                             lost:1;    /* a reconnect is due */
} ngx_http_webhook_lock_redis_t;


static ngx_http_webhook_lock_ticket_t *ngx_http_webhook_lock_redis_create(
    ngx_http_webhook_lock_command_e command, ngx_str_t *keys,
    ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token,
    ngx_msec_t ms, ngx_msec_t done);
static ngx_inline void ngx_http_webhook_lock_redis_arg(
    ngx_http_webhook_lock_ticket_t *t, int n, const void *data, size_t len);
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

static void ngx_http_webhook_lock_redis_connect(
    ngx_http_webhook_lock_redis_t *rd);
static void ngx_http_webhook_lock_redis_connected(
    const redisAsyncContext *ac, int status);
static void ngx_http_webhook_lock_redis_disconnected(
    const redisAsyncContext *ac, int status);
static ngx_int_t ngx_http_webhook_lock_redis_setup(
    ngx_http_webhook_lock_redis_t *rd);
static void ngx_http_webhook_lock_redis_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_webhook_lock_redis_script_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_webhook_lock_redis_ready(
    ngx_http_webhook_lock_redis_t *rd);

static void ngx_http_webhook_lock_redis_down(
    ngx_http_webhook_lock_redis_t *rd, const char *reason);
static void ngx_http_webhook_lock_redis_gone(
    ngx_http_webhook_lock_redis_t *rd, const char *reason);
static void ngx_http_webhook_lock_redis_fail(
    ngx_http_webhook_lock_redis_t *rd, const char *reason);
static void ngx_http_webhook_lock_redis_drop(
    ngx_http_webhook_lock_redis_t *rd, const char *reason);
static void ngx_http_webhook_lock_redis_close(
    ngx_http_webhook_lock_redis_t *rd);
static void ngx_http_webhook_lock_redis_unready(
    ngx_http_webhook_lock_redis_t *rd);
static void ngx_http_webhook_lock_redis_schedule(
    ngx_http_webhook_lock_redis_t *rd);

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


static ngx_http_webhook_lock_script_t  ngx_http_webhook_lock_acquire_script = {
    ngx_string(ngx_http_webhook_lock_acquire_lua), "", 0
};

static ngx_http_webhook_lock_script_t  ngx_http_webhook_lock_release_script = {
    ngx_string(ngx_http_webhook_lock_release_lua), "", 0
};


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


static ngx_http_webhook_lock_script_t  ngx_http_webhook_lock_dedup_script = {
    ngx_string(ngx_http_webhook_lock_dedup_lua), "", 1
};

static ngx_http_webhook_lock_script_t  ngx_http_webhook_lock_settle_script = {
    ngx_string(ngx_http_webhook_lock_settle_lua), "", 1
};


static ngx_http_webhook_lock_script_t  *ngx_http_webhook_lock_scripts[] = {
    &ngx_http_webhook_lock_acquire_script,
    &ngx_http_webhook_lock_release_script,
    &ngx_http_webhook_lock_dedup_script,
    &ngx_http_webhook_lock_settle_script
};


/* one per worker */
static ngx_http_webhook_lock_redis_t  ngx_http_webhook_lock_redis;


ngx_int_t
ngx_http_webhook_lock_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_webhook_lock_redis_conf_t *rcf)
{
    u_char                           md[SHA_DIGEST_LENGTH];
    ngx_uint_t                       i;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_script_t  *s;

    rd = &ngx_http_webhook_lock_redis;

    ngx_memzero(rd, sizeof(ngx_http_webhook_lock_redis_t));

    rd->conf = rcf;
    rd->backoff = NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MIN;

    ngx_queue_init(&rd->deferred);

    for (i = 0; i < sizeof(ngx_http_webhook_lock_scripts)
                    / sizeof(ngx_http_webhook_lock_scripts[0]); i++)
    {
        s = ngx_http_webhook_lock_scripts[i];
        SHA1(s->text.data, s->text.len, md);
        ngx_hex_dump(s->sha, md, SHA_DIGEST_LENGTH);
    }

    /* none of these may keep a worker from exiting */

    rd->connect.handler = ngx_http_webhook_lock_redis_connect_timeout;
    rd->connect.data = rd;
    rd->connect.log = cycle->log;
    rd->connect.cancelable = 1;

    rd->reconnect.handler = ngx_http_webhook_lock_redis_reconnect;
    rd->reconnect.data = rd;
    rd->reconnect.log = cycle->log;
    rd->reconnect.cancelable = 1;

    rd->drop.handler = ngx_http_webhook_lock_redis_drop_handler;
    rd->drop.data = rd;
    rd->drop.log = cycle->log;

    rd->active = 1;

    /* a Redis down at start is no error: we keep trying */

    ngx_http_webhook_lock_redis_connect(rd);

    return NGX_OK;
}


void
ngx_http_webhook_lock_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                     *q;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_ticket_t  *t;

    rd = &ngx_http_webhook_lock_redis;

    if (!rd->active) {
        return;
    }

    /*
     * The requests are gone, or about to be without running again:
     * pending handlers are not called, the tickets are only freed.
     */

    rd->exiting = 1;

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    ngx_http_webhook_lock_redis_close(rd);

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

    if (rd->state != NGX_HTTP_WEBHOOK_LOCK_REDIS_READY || nkeys == 0) {
        return NULL;
    }

    if (rd->pending >= rd->conf->max_pending) {
        if (rd->full != ngx_time()) {
            rd->full = ngx_time();
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "redis %V: %ui commands pending, "
                          "max_pending reached", &rd->conf->name,
                          rd->pending);
        }

        return NULL;
    }

    t = ngx_http_webhook_lock_redis_create((nkeys == 1 && nmarks == 0)
                                           ? NGX_HTTP_WEBHOOK_LOCK_CMD_SET
                                           : NGX_HTTP_WEBHOOK_LOCK_CMD_ACQUIRE,
                                           keys, nkeys, marks, nmarks, token,
                                           ttl, 0);
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
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_ticket_t  *t;

    rd = &ngx_http_webhook_lock_redis;

    if (!rd->active || rd->exiting || nkeys == 0) {
        return NGX_ERROR;
    }

    /* not bounded by max_pending: each follows an acquire that was */

    t = ngx_http_webhook_lock_redis_create(NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE,
                                           keys, nkeys, marks, nmarks, token,
                                           hold, done);
    if (t == NULL) {
        return NGX_ERROR;
    }

    if (rd->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_READY
        && ngx_http_webhook_lock_redis_send(rd, t) == NGX_OK)
    {
        return NGX_OK;
    }

    /* Redis is away: the release goes out once it is back */

    t->start = ngx_current_msec;

    return ngx_http_webhook_lock_redis_defer(rd, t);
}


void
ngx_http_webhook_lock_redis_orphan(ngx_http_webhook_lock_ticket_t *t)
{
    t->handler = NULL;
}


static ngx_http_webhook_lock_ticket_t *
ngx_http_webhook_lock_redis_create(ngx_http_webhook_lock_command_e command,
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks,
    ngx_str_t *token, ngx_msec_t ms, ngx_msec_t done)
{
    int                              argc, n;
    u_char                          *p, *num, *cnt, *dn, *exp;
    size_t                           size, numlen, cntlen, dnlen, explen;
    ngx_str_t                       *src;
    ngx_uint_t                       i;
    ngx_http_webhook_lock_script_t  *s;
    ngx_http_webhook_lock_ticket_t  *t;

    argc = (command == NGX_HTTP_WEBHOOK_LOCK_CMD_SET)
           ? 6 : (int) (nkeys + nmarks) + 5;

    if (nmarks) {
        /* how many keys are locks; a release adds the "done" time */
        argc += (command == NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE) ? 2 : 1;
    }

    /* one allocation: the ticket, keys, argv, argvlen, then the bytes */

    size = ngx_align(sizeof(ngx_http_webhook_lock_ticket_t), sizeof(void *))
           + (nkeys + nmarks) * sizeof(ngx_str_t)
           + argc * (sizeof(char *) + sizeof(size_t))
           + token->len + 4 * NGX_INT_T_LEN;

    for (i = 0; i < nkeys; i++) {
        size += keys[i].len;
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

    num = p;
    p = ngx_sprintf(p, "%ui", nkeys + nmarks);
    numlen = p - num;

    cnt = p;
    p = ngx_sprintf(p, "%ui", nkeys);
    cntlen = p - cnt;

    dn = p;
    p = ngx_sprintf(p, "%M", done);
    dnlen = p - dn;

    /* the last argument, room for NGX_INT_T_LEN: a resend rewrites it */

    exp = p;
    p = ngx_sprintf(p, "%M", ms);
    explen = p - exp;

    n = 0;

    if (command == NGX_HTTP_WEBHOOK_LOCK_CMD_SET) {
        ngx_http_webhook_lock_redis_arg(t, n++, "SET", 3);
        ngx_http_webhook_lock_redis_arg(t, n++, t->keys[0].data,
                                        t->keys[0].len);
        ngx_http_webhook_lock_redis_arg(t, n++, t->token.data, t->token.len);
        ngx_http_webhook_lock_redis_arg(t, n++, "NX", 2);
        ngx_http_webhook_lock_redis_arg(t, n++, "PX", 2);
        ngx_http_webhook_lock_redis_arg(t, n++, exp, explen);

    } else {
        if (command == NGX_HTTP_WEBHOOK_LOCK_CMD_ACQUIRE) {
            s = nmarks ? &ngx_http_webhook_lock_dedup_script
                       : &ngx_http_webhook_lock_acquire_script;

        } else {
            s = nmarks ? &ngx_http_webhook_lock_settle_script
                       : &ngx_http_webhook_lock_release_script;
        }

        ngx_http_webhook_lock_redis_arg(t, n++, "EVALSHA", 7);
        ngx_http_webhook_lock_redis_arg(t, n++, s->sha, sizeof(s->sha));
        ngx_http_webhook_lock_redis_arg(t, n++, num, numlen);

        for (i = 0; i < nkeys + nmarks; i++) {
            ngx_http_webhook_lock_redis_arg(t, n++, t->keys[i].data,
                                            t->keys[i].len);
        }

        ngx_http_webhook_lock_redis_arg(t, n++, t->token.data, t->token.len);

        if (nmarks) {
            ngx_http_webhook_lock_redis_arg(t, n++, cnt, cntlen);

            if (command == NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE) {
                ngx_http_webhook_lock_redis_arg(t, n++, dn, dnlen);
            }
        }

        ngx_http_webhook_lock_redis_arg(t, n++, exp, explen);

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

    if (redisAsyncCommandArgv(rd->ac, ngx_http_webhook_lock_redis_reply, t,
                              t->argc, t->argv, t->argvlen)
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

        elapsed = ngx_current_msec - t->start;
        t->ms = (t->ms > elapsed) ? t->ms - elapsed : 0;

        p = (u_char *) t->argv[t->argc - 1];
        t->argvlen[t->argc - 1] = ngx_sprintf(p, "%M", t->ms) - p;

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
        && t->command != NGX_HTTP_WEBHOOK_LOCK_CMD_SET
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

    if (rd->exiting) {
        ngx_free(t);
        return;
    }

    if (reply == NULL) {

        /*
         * The connection went with the command in it, run or not: a
         * release is tried again, an acquire undone, once Redis is back.
         */

        if (t->command == NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE) {
            (void) ngx_http_webhook_lock_redis_defer(rd, t);
            return;
        }

        rt = ngx_http_webhook_lock_redis_create(
                                         NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE,
                                         t->keys, t->nkeys,
                                         t->keys + t->nkeys, t->nmarks,
                                         &t->token, 0, 0);
        if (rt) {
            rt->start = t->start;
            rt->expire = t->start + t->ms;
            (void) ngx_http_webhook_lock_redis_defer(rd, rt);
        }

    } else if (handler == NULL
               && rc == 1
               && t->command != NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE)
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
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_script_t  *s;

    rd = &ngx_http_webhook_lock_redis;

    if (ac != rd->ac || rd->state != NGX_HTTP_WEBHOOK_LOCK_REDIS_READY) {
        return NGX_ERROR;
    }

    s = t->script;

    t->argv[0] = "EVAL";
    t->argvlen[0] = sizeof("EVAL") - 1;
    t->argv[1] = (const char *) s->text.data;
    t->argvlen[1] = s->text.len;

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
    ngx_http_webhook_lock_redis_t  *rd;

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
            && reply->integer >= 0)
        {
            return (ngx_int_t) reply->integer;
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

    ngx_http_webhook_lock_redis_drop(&ngx_http_webhook_lock_redis,
                                     "command timed out");

    if (handler) {
        handler(data, NGX_ERROR);
    }
}


static void
ngx_http_webhook_lock_redis_connect(ngx_http_webhook_lock_redis_t *rd)
{
    redisAsyncContext                   *ac;
    ngx_http_webhook_lock_redis_conf_t  *rcf;

    if (rd->ac != NULL || rd->exiting) {
        return;
    }

    rcf = rd->conf;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis connect to %V", &rcf->name);

    /* non-blocking; host is an address or a path, nothing to resolve */

    if (rcf->port) {
        ac = redisAsyncConnect((const char *) rcf->host.data, rcf->port);

    } else {
        ac = redisAsyncConnectUnix((const char *) rcf->host.data);
    }

    if (ac == NULL) {
        ngx_http_webhook_lock_redis_down(rd, "cannot allocate a context");
        ngx_http_webhook_lock_redis_schedule(rd);
        return;
    }

    if (ac->err) {
        ngx_http_webhook_lock_redis_down(rd, ac->c.errstr);
        redisAsyncFree(ac);
        ngx_http_webhook_lock_redis_schedule(rd);
        return;
    }

    if (ngx_http_webhook_lock_hiredis_attach(ac, ngx_cycle->log) != NGX_OK) {
        ngx_http_webhook_lock_redis_down(rd, "cannot attach a connection");
        redisAsyncFree(ac);
        ngx_http_webhook_lock_redis_schedule(rd);
        return;
    }

    ngx_http_webhook_lock_hiredis_set_close(ac,
                                     ngx_http_webhook_lock_redis_close_handler);

    rd->ac = ac;
    rd->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_CONNECTING;

    /* hiredis has no connect timeout of its own here: ours covers setup */

    ngx_add_timer(&rd->connect, rcf->connect_timeout);

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
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;

    if (ac != rd->ac) {
        return;
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns */
        ngx_http_webhook_lock_redis_gone(rd, ac->c.errstr);
        return;
    }

    (void) ngx_http_webhook_lock_redis_setup(rd);
}


static void
ngx_http_webhook_lock_redis_disconnected(const redisAsyncContext *ac,
    int status)
{
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;

    /* not the current context: we freed it, and said why */

    if (ac != rd->ac) {
        return;
    }

    ngx_http_webhook_lock_redis_gone(rd,
                                     (status == REDIS_OK
                                      || ac->c.errstr[0] == '\0')
                                     ? "connection closed" : ac->c.errstr);
}


/*
 * Pipelined, before anything else on the connection: one round trip for
 * all of them.  Acquires wait for the replies (the state turns READY),
 * so a wrong password or a hung Redis fails requests at once instead of
 * making them wait behind the setup.
 */

static ngx_int_t
ngx_http_webhook_lock_redis_setup(ngx_http_webhook_lock_redis_t *rd)
{
    u_char                               db[NGX_INT_T_LEN];
    size_t                               argvlen[3];
    ngx_uint_t                           i;
    const char                          *argv[3];
    ngx_http_webhook_lock_script_t      *s;
    ngx_http_webhook_lock_redis_conf_t  *rcf;

    rcf = rd->conf;

    rd->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP;
    rd->setup = 0;

    if (rcf->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = sizeof("AUTH") - 1;
        argv[1] = (const char *) rcf->password.data;
        argvlen[1] = rcf->password.len;

        if (redisAsyncCommandArgv(rd->ac,
                                  ngx_http_webhook_lock_redis_setup_reply,
                                  "AUTH", 2, argv, argvlen)
            != REDIS_OK)
        {
            goto failed;
        }

        rd->setup++;
    }

    if (rcf->db) {
        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", rcf->db) - db;

        if (redisAsyncCommandArgv(rd->ac,
                                  ngx_http_webhook_lock_redis_setup_reply,
                                  "SELECT", 2, argv, argvlen)
            != REDIS_OK)
        {
            goto failed;
        }

        rd->setup++;
    }

    for (i = 0; i < sizeof(ngx_http_webhook_lock_scripts)
                    / sizeof(ngx_http_webhook_lock_scripts[0]); i++)
    {
        s = ngx_http_webhook_lock_scripts[i];

        if (s->dedup && !rcf->dedup) {
            continue;
        }

        argv[0] = "SCRIPT";
        argvlen[0] = sizeof("SCRIPT") - 1;
        argv[1] = "LOAD";
        argvlen[1] = sizeof("LOAD") - 1;
        argv[2] = (const char *) s->text.data;
        argvlen[2] = s->text.len;

        if (redisAsyncCommandArgv(rd->ac,
                                  ngx_http_webhook_lock_redis_script_reply,
                                  s, 3, argv, argvlen)
            != REDIS_OK)
        {
            goto failed;
        }

        rd->setup++;
    }

    return NGX_OK;

failed:

    ngx_http_webhook_lock_redis_fail(rd, "cannot send the setup commands");

    return NGX_ERROR;
}


static void
ngx_http_webhook_lock_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    char                           *name = privdata;

    u_char                         *p, reason[NGX_MAX_ERROR_STR];
    redisReply                     *reply;
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;
    reply = r;

    /* NULL: the context is going away, which is logged where it happens */

    if (reply == NULL
        || ac != rd->ac
        || rd->state != NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP)
    {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* the error text only: never the password */

        p = ngx_snprintf(reason, sizeof(reason) - 1, "\"%s\" failed: %*s",
                         name, (size_t) reply->len, reply->str);
        *p = '\0';

        ngx_http_webhook_lock_redis_fail(rd, (char *) reason);
        return;
    }

    if (--rd->setup == 0) {
        ngx_http_webhook_lock_redis_ready(rd);
    }
}


static void
ngx_http_webhook_lock_redis_script_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_webhook_lock_script_t *s = privdata;

    redisReply                     *reply;
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;
    reply = r;

    if (reply == NULL
        || ac != rd->ac
        || rd->state != NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP)
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

    if (--rd->setup == 0) {
        ngx_http_webhook_lock_redis_ready(rd);
    }
}


static void
ngx_http_webhook_lock_redis_ready(ngx_http_webhook_lock_redis_t *rd)
{
    rd->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_READY;
    rd->backoff = NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MIN;

    rd->ready = 1;
    ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_CONNECTED,
                                   1);

    if (rd->lost) {
        rd->lost = 0;
        ngx_http_webhook_lock_stat_add(
                               NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_RECONNECTS, 1);
    }

    if (rd->connect.timer_set) {
        ngx_del_timer(&rd->connect);
    }

    if (rd->down) {
        rd->down = 0;
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "redis %V is back", &rd->conf->name);

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "webhook redis %V ready", &rd->conf->name);
    }

    ngx_http_webhook_lock_redis_resend(rd);
}


/* once per outage, not once per retry; "is back" ends it */

static void
ngx_http_webhook_lock_redis_down(ngx_http_webhook_lock_redis_t *rd,
    const char *reason)
{
    if (rd->exiting) {
        return;
    }

    if (rd->down) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "webhook redis %V still down: %s",
                       &rd->conf->name, reason);
        return;
    }

    rd->down = 1;

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis %V is unreachable: %s", &rd->conf->name, reason);
}


/* from hiredis's callbacks: the context is being freed by hiredis */

static void
ngx_http_webhook_lock_redis_gone(ngx_http_webhook_lock_redis_t *rd,
    const char *reason)
{
    ngx_http_webhook_lock_redis_unready(rd);

    rd->ac = NULL;
    rd->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN;

    if (rd->connect.timer_set) {
        ngx_del_timer(&rd->connect);
    }

    if (rd->drop.posted) {
        ngx_delete_posted_event(&rd->drop);
    }

    ngx_http_webhook_lock_redis_down(rd, reason);
    ngx_http_webhook_lock_redis_schedule(rd);
}


/*
 * From inside a hiredis callback the context cannot be freed under
 * hiredis's feet: no more commands go to it, and a posted event frees it
 * once the callback has returned.
 */

static void
ngx_http_webhook_lock_redis_fail(ngx_http_webhook_lock_redis_t *rd,
    const char *reason)
{
    ngx_http_webhook_lock_redis_down(rd, reason);

    if (rd->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING) {
        return;
    }

    rd->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING;

    ngx_post_event(&rd->drop, &ngx_posted_events);
}


/* outside hiredis callbacks: timers, posted events, shutdown */

static void
ngx_http_webhook_lock_redis_drop(ngx_http_webhook_lock_redis_t *rd,
    const char *reason)
{
    ngx_http_webhook_lock_redis_down(rd, reason);
    ngx_http_webhook_lock_redis_close(rd);
}


static void
ngx_http_webhook_lock_redis_close(ngx_http_webhook_lock_redis_t *rd)
{
    redisAsyncContext  *ac;

    ac = rd->ac;

    ngx_http_webhook_lock_redis_unready(rd);

    /* first: the callbacks below must find no context to send to */

    rd->ac = NULL;
    rd->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN;

    if (rd->connect.timer_set) {
        ngx_del_timer(&rd->connect);
    }

    if (rd->drop.posted) {
        ngx_delete_posted_event(&rd->drop);
    }

    if (ac) {
        /* pending callbacks run with NULL, then the adapter's cleanup */
        redisAsyncFree(ac);
    }

    ngx_http_webhook_lock_redis_schedule(rd);
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


static void
ngx_http_webhook_lock_redis_schedule(ngx_http_webhook_lock_redis_t *rd)
{
    ngx_msec_t  delay;

    if (rd->exiting || rd->reconnect.timer_set) {
        return;
    }

    /* jitter keeps the workers from knocking all at once */

    delay = rd->backoff + (ngx_msec_t) ngx_random() % (rd->backoff / 4 + 1);

    rd->backoff = ngx_min(rd->backoff * 2, NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MAX);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis reconnect in %Mms", delay);

    ngx_add_timer(&rd->reconnect, delay);
}


static void
ngx_http_webhook_lock_redis_close_handler(redisAsyncContext *ac,
    ngx_uint_t force)
{
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_redis;

    if (ac != rd->ac) {
        return;
    }

    /*
     * A graceful shutdown waits for timers, never for connections: the
     * worker lives on while its requests do, and their releases still
     * need this connection.  exit_process frees it.
     */

    if (!force) {
        return;
    }

    /* worker_shutdown_timeout: every request is being closed as well */

    rd->exiting = 1;

    ngx_http_webhook_lock_redis_close(rd);
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
    ngx_http_webhook_lock_redis_t  *rd = ev->data;

    if (rd->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING) {
        ngx_http_webhook_lock_redis_close(rd);
    }
}
