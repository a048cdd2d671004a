
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <openssl/rand.h>

#include "ngx_http_webhook_lock_redis.h"
#include "ngx_http_webhook_lock_redis_wait.h"
#include "ngx_http_webhook_lock_status.h"


/* the longest dedup mark */
#define NGX_HTTP_WEBHOOK_LOCK_KEY_MAX  1024


static ngx_int_t ngx_http_webhook_lock_marks(
    ngx_http_webhook_lock_handle_t *lk);
static u_char *ngx_http_webhook_lock_random(ngx_log_t *log);
static void ngx_http_webhook_lock_answer(void *data, ngx_int_t rc);
static void ngx_http_webhook_lock_answer_handler(ngx_event_t *ev);
static void ngx_http_webhook_lock_renew_handler(ngx_event_t *ev);
static void ngx_http_webhook_lock_redis_flush(
    ngx_http_webhook_lock_redis_t *rd, ngx_int_t rc);
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
    ngx_queue_init(&rd->connecting);

    ngx_http_webhook_lock_scripts_init();

    ngx_http_webhook_lock_conn_init(&rd->cmd, rcf, cycle->log, "", rd);

    rd->cmd.init = ngx_http_webhook_lock_redis_setup;
    rd->cmd.ready_handler = ngx_http_webhook_lock_redis_ready;
    rd->cmd.lost_handler = ngx_http_webhook_lock_redis_lost;
    rd->cmd.shutdown_handler = ngx_http_webhook_lock_redis_shutdown;

    rd->active = 1;

    if (rcf->sentinels) {
        rd->sentinels = ngx_http_webhook_lock_sentinel_init(cycle, rcf);

        if (rd->sentinels == NULL
            || ngx_http_webhook_lock_sentinel_attach(rd->sentinels, &rd->cmd)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

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
     * The requests are gone, or about to be without running again: every
     * lock handle still attached is detached, nothing more.
     */

    rd->exiting = 1;

    /* the commands in flight complete (with NULL), then what waits */

    ngx_http_webhook_lock_conn_exit(&rd->cmd);
    ngx_http_webhook_lock_conn_exit(&rd->sub);

    if (rd->sentinels) {
        ngx_http_webhook_lock_sentinel_exit(rd->sentinels);
    }

    ngx_http_webhook_lock_redis_flush(rd, NGX_ERROR);
    ngx_http_webhook_lock_wait_exit(rd);

    while (!ngx_queue_empty(&rd->deferred)) {
        q = ngx_queue_head(&rd->deferred);
        ngx_queue_remove(q);

        t = ngx_queue_data(q, ngx_http_webhook_lock_ticket_t, queue);
        ngx_free(t);
    }

    rd->ndeferred = 0;
    rd->active = 0;
}


ngx_int_t
ngx_http_webhook_lock_take(ngx_http_webhook_lock_handle_t *lk)
{
    u_char                          *random;
    ngx_str_t                        token;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_ticket_t  *t;
    ngx_http_webhook_lock_waiter_t  *w;

    rd = &ngx_http_webhook_lock_worker;

    random = ngx_http_webhook_lock_random(lk->log);
    if (random == NULL) {
        return NGX_ERROR;
    }

    ngx_hex_dump(lk->token, random, NGX_HTTP_WEBHOOK_LOCK_TOKEN_LEN / 2);

    token.data = lk->token;
    token.len = NGX_HTTP_WEBHOOK_LOCK_TOKEN_LEN;

    if (lk->dedup && lk->nids && ngx_http_webhook_lock_marks(lk) != NGX_OK) {
        return NGX_ERROR;
    }

    lk->start = ngx_current_msec;

    lk->event.handler = ngx_http_webhook_lock_answer_handler;
    lk->event.data = lk;
    lk->event.log = lk->log;

    if (!rd->active || rd->exiting || lk->nkeys == 0
        || ngx_http_webhook_lock_redis_overloaded(rd))
    {
        return NGX_DECLINED;
    }

    if (lk->wait) {
        w = ngx_http_webhook_lock_redis_wait(lk->keys, lk->nkeys, lk->marks,
                                             lk->nmarks, &token, lk->ttl,
                                             lk->wait, lk->queue,
                                             ngx_http_webhook_lock_answer,
                                             lk);
        if (w == NULL) {
            return NGX_DECLINED;
        }

        lk->op = w;

        return NGX_AGAIN;
    }

    t = ngx_http_webhook_lock_script_acquire(lk->keys, lk->nkeys, lk->marks,
                                             lk->nmarks, &token, lk->ttl);
    if (t == NULL) {
        return NGX_DECLINED;
    }

    t->handler = ngx_http_webhook_lock_answer;
    t->data = lk;

    if (ngx_http_webhook_lock_redis_submit(rd, t) != NGX_OK) {
        ngx_free(t);
        return NGX_DECLINED;
    }

    lk->op = t;

    return NGX_AGAIN;
}


void
ngx_http_webhook_lock_cancel(ngx_http_webhook_lock_handle_t *lk)
{
    ngx_http_webhook_lock_ticket_t  *t;

    if (lk->op) {
        if (lk->wait) {
            ngx_http_webhook_lock_redis_leave(lk->op);

        } else {
            /* a lock taken for nobody is given back when it comes */
            t = lk->op;
            t->handler = NULL;
        }

        lk->op = NULL;
    }

    if (lk->event.posted) {
        ngx_delete_posted_event(&lk->event);
    }
}


void
ngx_http_webhook_lock_release(ngx_http_webhook_lock_handle_t *lk,
    ngx_http_webhook_lock_end_e end)
{
    ngx_str_t                        token;
    ngx_msec_t                       held, hold, done;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_ticket_t  *t;

    if (!lk->held) {
        return;
    }

    lk->held = 0;

    if (lk->renew.timer_set) {
        ngx_del_timer(&lk->renew);
    }

    ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_LOCKS_HELD, -1);

    held = ngx_current_msec - lk->acquired;

    if (end == NGX_HTTP_WEBHOOK_LOCK_END_LEFT) {
        ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_LOCKS_LEFT,
                                       1);

        ngx_log_error(NGX_LOG_WARN, lk->log, 0,
                      "webhook lock left to expire: the request ended "
                      "before the app answered, held %Mms, key \"%V\"",
                      held, &lk->keys[0]);
        return;
    }

    rd = &ngx_http_webhook_lock_worker;

    if (!rd->active || rd->exiting) {
        return;
    }

    hold = (lk->hold > held) ? lk->hold - held : 0;
    done = (end == NGX_HTTP_WEBHOOK_LOCK_END_DONE) ? lk->dedup : 0;

    token.data = lk->token;
    token.len = NGX_HTTP_WEBHOOK_LOCK_TOKEN_LEN;

    /* where requests wait, the next one in the queue gets the lock */

    if (lk->wait) {
        t = ngx_http_webhook_lock_script_handoff(lk->keys, lk->nkeys,
                                                 lk->marks, lk->nmarks,
                                                 &token, hold, done);

    } else {
        t = ngx_http_webhook_lock_script_release(lk->keys, lk->nkeys,
                                                 lk->marks, lk->nmarks,
                                                 &token, hold, done);
    }

    if (t) {
        (void) ngx_http_webhook_lock_redis_post(rd, t);
    }
}


/*
 * The completion of the command or the wait, whatever ended it: the op
 * is detached here and is gone once this returns.  The request hears of
 * it from a posted event: this may run inside hiredis.
 */

static void
ngx_http_webhook_lock_answer(void *data, ngx_int_t rc)
{
    ngx_http_webhook_lock_handle_t *lk = data;

    if (lk->wait) {
        /* Redis's own time; the rest was the wait */
        lk->round_trip = ngx_http_webhook_lock_redis_round_trip(lk->op);

    } else {
        lk->round_trip = ngx_current_msec - lk->start;
    }

    lk->op = NULL;
    lk->rc = rc;

    if (rc == NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN
        || rc == NGX_HTTP_WEBHOOK_LOCK_REDIS_WAITED)
    {
        lk->held = 1;
        lk->acquired = ngx_current_msec;

        ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_LOCKS_HELD,
                                       1);

        /* cancelable: a request in the app keeps the worker anyway */

        lk->renew.handler = ngx_http_webhook_lock_renew_handler;
        lk->renew.data = lk;
        lk->renew.log = lk->log;
        lk->renew.cancelable = 1;

        ngx_add_timer(&lk->renew, ngx_max(lk->ttl / 3, 1));
    }

    ngx_post_event(&lk->event, &ngx_posted_events);
}


static void
ngx_http_webhook_lock_answer_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_handle_t *lk = ev->data;

    lk->handler(lk);
}


/*
 * The lock covers the app's work, however long: renewed every third of
 * its ttl while held.  A renewal that cannot go now (Redis away, too
 * busy) is simply skipped: the next one comes a third of a ttl later.
 */

static void
ngx_http_webhook_lock_renew_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_handle_t *lk = ev->data;

    ngx_str_t                        token;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_ticket_t  *t;

    rd = &ngx_http_webhook_lock_worker;

    if (!lk->held || rd->exiting) {
        return;
    }

    ngx_add_timer(&lk->renew, ngx_max(lk->ttl / 3, 1));

    if (rd->cmd.state != NGX_HTTP_WEBHOOK_LOCK_REDIS_READY
        || rd->pending >= rd->conf->max_pending)
    {
        return;
    }

    token.data = lk->token;
    token.len = NGX_HTTP_WEBHOOK_LOCK_TOKEN_LEN;

    t = ngx_http_webhook_lock_script_renew(lk->keys, lk->nkeys, &token,
                                           lk->ttl);
    if (t == NULL) {
        return;
    }

    if (ngx_http_webhook_lock_redis_send(rd, t) != NGX_OK) {
        ngx_free(t);
    }
}


/*
 * webhook_dedup: one mark per message id, "webhook:dedup:{INBOX}:ID".
 * An id that cannot be marked turns dedup off for the whole body, which
 * is then forwarded: a duplicate is better than a message lost.
 */

static ngx_int_t
ngx_http_webhook_lock_marks(ngx_http_webhook_lock_handle_t *lk)
{
    u_char      *p;
    size_t       len, size;
    ngx_uint_t   i;

    size = 0;

    for (i = 0; i < lk->nids; i++) {
        len = sizeof("webhook:dedup:{}:") - 1 + lk->inbox.len
              + lk->ids[i].len;

        if (len > NGX_HTTP_WEBHOOK_LOCK_KEY_MAX) {
            ngx_log_error(NGX_LOG_ERR, lk->log, 0,
                          "webhook dedup key of %uz bytes is too long, "
                          "message \"%V\" not deduplicated", len,
                          &lk->ids[i]);
            return NGX_OK;
        }

        size += len;
    }

    lk->marks = ngx_palloc(lk->pool, lk->nids * sizeof(ngx_str_t));
    if (lk->marks == NULL) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(lk->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < lk->nids; i++) {
        lk->marks[i].data = p;
        p = ngx_sprintf(p, "webhook:dedup:{%V}:%V", &lk->inbox, &lk->ids[i]);
        lk->marks[i].len = p - lk->marks[i].data;
    }

    lk->nmarks = lk->nids;

    return NGX_OK;
}


/*
 * 128 random bits for a token, cut from a per-worker buffer that
 * RAND_bytes() fills 4 KB at a time: one call per 256 requests instead
 * of one per request.  Only workers lock, so the master never fills it
 * and every worker starts with its own.
 */

static u_char *
ngx_http_webhook_lock_random(ngx_log_t *log)
{
    static u_char  buf[4096];
    static size_t  left;

    if (left < NGX_HTTP_WEBHOOK_LOCK_TOKEN_LEN / 2) {
        if (RAND_bytes(buf, sizeof(buf)) != 1) {
            ngx_log_error(NGX_LOG_ALERT, log, 0, "RAND_bytes() failed");
            return NULL;
        }

        left = sizeof(buf);
    }

    left -= NGX_HTTP_WEBHOOK_LOCK_TOKEN_LEN / 2;

    return buf + left;
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


/*
 * A command with an answer: sent now when Redis is ready, or sent once
 * it is when the connection is being made, so that a worker's start, a
 * reload or a reconnect does not turn requests to the failure policy.
 * That wait counts in max_pending and lasts at most connect_timeout.
 */

ngx_int_t
ngx_http_webhook_lock_redis_submit(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_ticket_t *t)
{
    switch (rd->cmd.state) {

    case NGX_HTTP_WEBHOOK_LOCK_REDIS_READY:
        return ngx_http_webhook_lock_redis_send(rd, t);

    case NGX_HTTP_WEBHOOK_LOCK_REDIS_CONNECTING:
    case NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP:
        break;

    default:
        return NGX_ERROR;
    }

    if (rd->exiting) {
        return NGX_ERROR;
    }

    t->start = ngx_current_msec;
    t->connecting = 1;

    t->timer.handler = ngx_http_webhook_lock_redis_timeout;
    t->timer.data = t;
    t->timer.log = ngx_cycle->log;

    ngx_add_timer(&t->timer, rd->conf->connect_timeout);

    ngx_queue_insert_tail(&rd->connecting, &t->queue);
    rd->pending++;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis %s waits for the connection", t->argv[0]);

    return NGX_OK;
}


/*
 * The connection is ready (NGX_OK): what waited for it goes out; or it
 * failed (NGX_ERROR): what waited fails too.
 */

static void
ngx_http_webhook_lock_redis_flush(ngx_http_webhook_lock_redis_t *rd,
    ngx_int_t rc)
{
    ngx_queue_t                     *q;
    ngx_http_webhook_lock_reply_pt   handler;
    ngx_http_webhook_lock_ticket_t  *t;

    while (!ngx_queue_empty(&rd->connecting)) {
        q = ngx_queue_head(&rd->connecting);
        ngx_queue_remove(q);

        t = ngx_queue_data(q, ngx_http_webhook_lock_ticket_t, queue);

        t->connecting = 0;
        rd->pending--;

        if (t->timer.timer_set) {
            ngx_del_timer(&t->timer);
        }

        if (rc == NGX_OK && ngx_http_webhook_lock_redis_send(rd, t) == NGX_OK)
        {
            continue;
        }

        handler = t->handler;

        if (handler) {
            handler(t->data, NGX_ERROR);
        }

        ngx_free(t);
    }
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

    /* the master became a replica: as if the connection went with it */

    if (reply != NULL
        && reply->type == REDIS_REPLY_ERROR
        && ngx_http_webhook_lock_sentinel_readonly(&rd->cmd, ac, reply))
    {
        reply = NULL;
    }

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

    /* even when exiting: whoever holds the ticket lets go of it */

    handler = t->handler;
    t->handler = NULL;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis reply: %i, %s, pending:%ui",
                   rc, handler ? "handled" : "unhandled", rd->pending);

    if (handler) {
        handler(t->data, rc);
    }

    /*
     * A wait leaves the queue by itself when it ends without the lock;
     * a renewal lost is simply the next one's to do.
     */

    if (rd->exiting
        || t->command == NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT
        || t->command == NGX_HTTP_WEBHOOK_LOCK_CMD_RENEW)
    {
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

        rt = ngx_http_webhook_lock_script_release(t->keys, t->nkeys,
                                                  t->keys + t->nkeys,
                                                  t->nmarks, &t->token, 0, 0);
        if (rt) {
            (void) ngx_http_webhook_lock_redis_post(rd, rt);
        }
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

    if (t->connecting) {

        /* never sent: the connection is not made within connect_timeout */

        ngx_queue_remove(&t->queue);
        ngx_http_webhook_lock_worker.pending--;
        ngx_free(t);

        if (handler) {
            handler(data, NGX_ERROR);
        }

        return;
    }

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
    ngx_http_webhook_lock_redis_flush(rd, NGX_OK);
}


static void
ngx_http_webhook_lock_redis_lost(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_redis_t *rd = cn->data;

    ngx_http_webhook_lock_redis_unready(rd);

    ngx_http_webhook_lock_redis_flush(rd, NGX_ERROR);
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

    if (rd->sentinels) {
        ngx_http_webhook_lock_sentinel_exit(rd->sentinels);
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
