
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_webhook_lock_redis.h"
#include "ngx_http_webhook_lock_redis_wait.h"
#include "ngx_http_webhook_lock_status.h"


static ngx_int_t ngx_http_webhook_lock_redis_defer(
    ngx_http_webhook_lock_redis_t *rd, ngx_http_webhook_lock_ticket_t *t);
static void ngx_http_webhook_lock_redis_resend(
    ngx_http_webhook_lock_redis_t *rd);
static void ngx_http_webhook_lock_redis_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_int_t ngx_http_webhook_lock_redis_eval(redisAsyncContext *ac,
    ngx_http_webhook_lock_ticket_t *t);
static void ngx_http_webhook_lock_redis_timeout(ngx_event_t *ev);
static void ngx_http_webhook_lock_redis_setup(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_ready(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_lost(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_shutdown(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_redis_unready(
    ngx_http_webhook_lock_redis_t *rd);


ngx_http_webhook_lock_redis_t  ngx_http_webhook_lock_worker;


ngx_int_t
ngx_http_webhook_lock_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_webhook_lock_redis_conf_t *rcf)
{
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_worker;

    ngx_memzero(rd, sizeof(ngx_http_webhook_lock_redis_t));

    rd->conf = rcf;

    ngx_queue_init(&rd->deferred);

    ngx_http_webhook_lock_scripts_init();

    ngx_http_webhook_lock_conn_init(&rd->cmd, rcf, cycle->log, "", rd);

    rd->cmd.init = ngx_http_webhook_lock_redis_setup;
    rd->cmd.ready_handler = ngx_http_webhook_lock_redis_ready;
    rd->cmd.lost_handler = ngx_http_webhook_lock_redis_lost;
    rd->cmd.shutdown_handler = ngx_http_webhook_lock_redis_shutdown;

    rd->active = 1;

    if (ngx_http_webhook_lock_wait_init(cycle, rd) != NGX_OK) {
        return NGX_ERROR;
    }

    /* a Redis down at start is no error: we keep trying */

    ngx_http_webhook_lock_conn_connect(&rd->cmd);

    return NGX_OK;
}


void
ngx_http_webhook_lock_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                     *q;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_ticket_t  *t;

    rd = &ngx_http_webhook_lock_worker;

    if (!rd->active) {
        return;
    }

    /*
     * The requests are gone, or about to be without running again:
     * pending handlers are not called, tickets and waiters only freed.
     */

    rd->exiting = 1;

    ngx_http_webhook_lock_wait_exit(rd);

    ngx_http_webhook_lock_conn_exit(&rd->cmd);
    ngx_http_webhook_lock_conn_exit(&rd->sub);

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

    rd = &ngx_http_webhook_lock_worker;

    /* not ready (down, connecting, backing off): nobody waits for it */

    if (rd->cmd.state != NGX_HTTP_WEBHOOK_LOCK_REDIS_READY || nkeys == 0) {
        return NULL;
    }

    if (ngx_http_webhook_lock_redis_overloaded(rd)) {
        return NULL;
    }

    t = ngx_http_webhook_lock_script_acquire(keys, nkeys, marks, nmarks,
                                             token, ttl);
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

    rd = &ngx_http_webhook_lock_worker;

    if (!rd->active || rd->exiting || nkeys == 0) {
        return NGX_ERROR;
    }

    t = ngx_http_webhook_lock_script_release(keys, nkeys, marks, nmarks,
                                             token, hold, done);
    if (t == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_webhook_lock_redis_post(rd, t);
}


ngx_int_t
ngx_http_webhook_lock_redis_handoff(ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token, ngx_msec_t hold,
    ngx_msec_t done)
{
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_ticket_t  *t;

    rd = &ngx_http_webhook_lock_worker;

    if (!rd->active || rd->exiting || nkeys == 0) {
        return NGX_ERROR;
    }

    t = ngx_http_webhook_lock_script_handoff(keys, nkeys, marks, nmarks,
                                             token, hold, done);
    if (t == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_webhook_lock_redis_post(rd, t);
}


void
ngx_http_webhook_lock_redis_orphan(ngx_http_webhook_lock_ticket_t *t)
{
    t->handler = NULL;
}


ngx_int_t
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
 * back, with what is left of its hold.  Not bounded by max_pending when
 * sent: each follows an acquire that was.
 */

ngx_int_t
ngx_http_webhook_lock_redis_post(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_ticket_t *t)
{
    if (rd->cmd.state == NGX_HTTP_WEBHOOK_LOCK_REDIS_READY
        && ngx_http_webhook_lock_redis_send(rd, t) == NGX_OK)
    {
        return NGX_OK;
    }

    /* Redis is away: the command goes out once it is back */

    t->start = ngx_current_msec;

    return ngx_http_webhook_lock_redis_defer(rd, t);
}


ngx_int_t
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

    /*
     * Not cancelable, on purpose: a graceful shutdown then waits (at most
     * "timeout") for the commands in flight, so a request waiting for its
     * lock is answered and the releases of the worker's last requests are
     * written and done, instead of the worker exiting under them.
     */

    t->timer.handler = ngx_http_webhook_lock_redis_timeout;
    t->timer.data = t;
    t->timer.log = ngx_cycle->log;

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
 * touches keys that still hold the request's own token.  Leaves are not
 * bounded by max_pending: there is one per waiter at most.
 */

static ngx_int_t
ngx_http_webhook_lock_redis_defer(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_ticket_t *t)
{
    if (rd->exiting
        || (rd->ndeferred >= rd->conf->max_pending
            && t->command != NGX_HTTP_WEBHOOK_LOCK_CMD_LEAVE))
    {
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
            ngx_http_webhook_lock_script_hold(t, (t->ms > elapsed)
                                                 ? t->ms - elapsed : 0);
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

    rd = &ngx_http_webhook_lock_worker;
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

    rc = ngx_http_webhook_lock_script_result(t, reply, &rd->conf->name);

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

        rt = ngx_http_webhook_lock_script_release(t->keys, t->nkeys,
                                                  t->keys + t->nkeys,
                                                  t->nmarks, &t->token, 0, 0);
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

    rd = &ngx_http_webhook_lock_worker;

    if (ac != rd->cmd.ac
        || rd->cmd.state != NGX_HTTP_WEBHOOK_LOCK_REDIS_READY)
    {
        return NGX_ERROR;
    }

    ngx_http_webhook_lock_script_eval(t);

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

    ngx_http_webhook_lock_conn_drop(&ngx_http_webhook_lock_worker.cmd,
                                    "command timed out");

    if (handler) {
        handler(data, NGX_ERROR);
    }
}



/*
 * The command connection's setup, pipelined: AUTH, SELECT, the scripts.
 */

static void
ngx_http_webhook_lock_redis_setup(ngx_http_webhook_lock_conn_t *cn)
{
    if (ngx_http_webhook_lock_conn_login(cn, 1) != NGX_OK
        || ngx_http_webhook_lock_scripts_load(cn) != NGX_OK)
    {
        ngx_http_webhook_lock_conn_fail(cn, "cannot send the setup commands");
    }
}


/* the command connection: counted, and the deferred releases go out */

static void
ngx_http_webhook_lock_redis_ready(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_redis_t *rd = cn->data;

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


static void
ngx_http_webhook_lock_redis_lost(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_redis_t *rd = cn->data;

    ngx_http_webhook_lock_redis_unready(rd);

    ngx_http_webhook_lock_wait_lost(rd);
}


/* worker_shutdown_timeout: every request is being closed as well */

static void
ngx_http_webhook_lock_redis_shutdown(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_redis_t *rd = cn->data;

    rd->exiting = 1;

    ngx_http_webhook_lock_conn_exit(&rd->cmd);
    ngx_http_webhook_lock_conn_exit(&rd->sub);
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
