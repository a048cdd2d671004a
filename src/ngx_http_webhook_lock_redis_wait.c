
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


/* a waiter that nothing woke asks again after this, +-25% */
#define NGX_HTTP_WEBHOOK_LOCK_POLL         1000

/*
 * Each question renews the waiter's queue entries for this long: two
 * questions may be late or lost before a live waiter loses its place,
 * while an entry whose request is gone stops standing in the way of the
 * waiters behind it after this at most.
 */
#define NGX_HTTP_WEBHOOK_LOCK_LEASE        (3 * NGX_HTTP_WEBHOOK_LOCK_POLL)

/* "webhook_lock:", 64 random bits in hex, ":", the pid */
#define NGX_HTTP_WEBHOOK_LOCK_CHANNEL_LEN                                    \
    (sizeof("webhook_lock:") - 1 + 16 + 1 + NGX_INT64_LEN)


/*
 * A request waiting for its turn, owned by the Redis code as tickets
 * are.  Known by its token to the subscriber, which finds it when a
 * release hands it the lock ("T") or wakes it to ask again ("W").
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


static ngx_int_t ngx_http_webhook_lock_wait_ask(
    ngx_http_webhook_lock_redis_t *rd, ngx_http_webhook_lock_waiter_t *w);
static void ngx_http_webhook_lock_wait_answer(void *data, ngx_int_t rc);
static void ngx_http_webhook_lock_wait_take(
    ngx_http_webhook_lock_waiter_t *w, ngx_msec_t after);
static void ngx_http_webhook_lock_wait_sooner(
    ngx_http_webhook_lock_waiter_t *w, ngx_msec_t delay);
static void ngx_http_webhook_lock_wait_finish(
    ngx_http_webhook_lock_waiter_t *w, ngx_int_t rc);
static void ngx_http_webhook_lock_wait_wake(
    ngx_http_webhook_lock_redis_t *rd, u_char *p, size_t len);
static void ngx_http_webhook_lock_wait_deadline_handler(ngx_event_t *ev);
static void ngx_http_webhook_lock_wait_timer_handler(ngx_event_t *ev);
static void ngx_http_webhook_lock_wait_fail_handler(ngx_event_t *ev);
static void ngx_http_webhook_lock_wait_subscribe(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_wait_message(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_webhook_lock_wait_subscribed(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_wait_nothing(
    ngx_http_webhook_lock_conn_t *cn);


/* the worker's channel, and the subscriber that listens on it */

ngx_int_t
ngx_http_webhook_lock_wait_init(ngx_cycle_t *cycle,
    ngx_http_webhook_lock_redis_t *rd)
{
    u_char  *p, id[8];

    ngx_queue_init(&rd->waiters);
    ngx_rbtree_init(&rd->tokens, &rd->sentinel, ngx_str_rbtree_insert_value);

    rd->fail.handler = ngx_http_webhook_lock_wait_fail_handler;
    rd->fail.data = rd;
    rd->fail.log = cycle->log;

    if (!rd->conf->queue) {
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

    ngx_http_webhook_lock_conn_init(&rd->sub, rd->conf, cycle->log,
                                    " subscriber", rd);

    rd->sub.init = ngx_http_webhook_lock_wait_subscribe;
    rd->sub.ready_handler = ngx_http_webhook_lock_wait_subscribed;
    rd->sub.lost_handler = ngx_http_webhook_lock_wait_nothing;
    rd->sub.shutdown_handler = rd->cmd.shutdown_handler;

    if (rd->sentinels
        && ngx_http_webhook_lock_sentinel_attach(rd->sentinels, &rd->sub)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_webhook_lock_conn_connect(&rd->sub);

    return NGX_OK;
}


/*
 * The worker exits: every waiter ends, its handler told (which detaches
 * whoever held it), nothing sent.
 */

void
ngx_http_webhook_lock_wait_exit(ngx_http_webhook_lock_redis_t *rd)
{
    ngx_queue_t                     *q;
    ngx_http_webhook_lock_waiter_t  *w;

    if (rd->fail.posted) {
        ngx_delete_posted_event(&rd->fail);
    }

    while (!ngx_queue_empty(&rd->waiters)) {
        q = ngx_queue_head(&rd->waiters);
        w = ngx_queue_data(q, ngx_http_webhook_lock_waiter_t, queue);

        ngx_http_webhook_lock_wait_finish(w, NGX_ERROR);
    }
}


/* the command connection is lost */

void
ngx_http_webhook_lock_wait_lost(ngx_http_webhook_lock_redis_t *rd)
{
    /* posted: this may run inside hiredis, or inside a waiter's handler */

    if (!rd->exiting
        && !ngx_queue_empty(&rd->waiters)
        && !rd->fail.posted)
    {
        ngx_post_event(&rd->fail, &ngx_posted_events);
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

    rd = &ngx_http_webhook_lock_worker;

    if (!rd->conf->queue || nkeys == 0) {
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

    w->wait.handler = ngx_http_webhook_lock_wait_deadline_handler;
    w->wait.data = w;
    w->wait.log = ngx_cycle->log;

    w->timer.handler = ngx_http_webhook_lock_wait_timer_handler;
    w->timer.data = w;
    w->timer.log = ngx_cycle->log;
    w->timer.cancelable = 1;

    if (ngx_http_webhook_lock_wait_ask(rd, w) != NGX_OK) {
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

    ngx_http_webhook_lock_wait_finish(w, NGX_HTTP_WEBHOOK_LOCK_REDIS_BUSY);
}


/* take or queue; asked again, it keeps its place */

static ngx_int_t
ngx_http_webhook_lock_wait_ask(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_waiter_t *w)
{
    ngx_msec_t                       left;
    ngx_http_webhook_lock_ticket_t  *t;

    /* what is left of the wait: the deadline of an entry made now */

    left = w->deadline - ngx_current_msec;

    if ((ngx_msec_int_t) left <= 0) {
        left = 1;
    }

    t = ngx_http_webhook_lock_script_wait(w->keys, w->nkeys,
                                          w->keys + w->nkeys, w->nmarks,
                                          &w->node.str, w->ttl, left, w->max,
                                          &rd->channel,
                                          NGX_HTTP_WEBHOOK_LOCK_LEASE);
    if (t == NULL) {
        return NGX_ERROR;
    }

    t->handler = ngx_http_webhook_lock_wait_answer;
    t->data = w;

    if (ngx_http_webhook_lock_redis_submit(rd, t) != NGX_OK) {
        ngx_free(t);
        return NGX_ERROR;
    }

    w->ticket = t;

    return NGX_OK;
}


static void
ngx_http_webhook_lock_wait_answer(void *data, ngx_int_t rc)
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
        ngx_http_webhook_lock_wait_take(w, t->hint);
        return;

    case 0:
        w->queued = 1;
        break;

    case 2:
        ngx_http_webhook_lock_wait_finish(w,
                                      NGX_HTTP_WEBHOOK_LOCK_REDIS_PROCESSING);
        return;

    case 3:
        ngx_http_webhook_lock_wait_finish(w,
                                       NGX_HTTP_WEBHOOK_LOCK_REDIS_DUPLICATE);
        return;

    case 4:
        ngx_http_webhook_lock_wait_finish(w, w->queued
                                           ? NGX_HTTP_WEBHOOK_LOCK_REDIS_BUSY
                                           : NGX_HTTP_WEBHOOK_LOCK_REDIS_FULL);
        return;

    default: /* NGX_ERROR */
        ngx_http_webhook_lock_wait_finish(w, NGX_ERROR);
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

    ngx_http_webhook_lock_wait_sooner(w, delay);
}


static void
ngx_http_webhook_lock_wait_take(ngx_http_webhook_lock_waiter_t *w,
    ngx_msec_t after)
{
    w->taken = 1;

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    if (after == 0) {
        ngx_http_webhook_lock_wait_finish(w, w->queued
                                           ? NGX_HTTP_WEBHOOK_LOCK_REDIS_WAITED
                                           : NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN);
        return;
    }

    /* handed over within the previous holder's hold: ours once it ends */

    ngx_add_timer(&w->timer, after);
}


static void
ngx_http_webhook_lock_wait_sooner(ngx_http_webhook_lock_waiter_t *w,
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
 * may be queued leaves, which also passes on a lock handed to it and
 * deletes the marks a question with no answer may have set.
 */

static void
ngx_http_webhook_lock_wait_finish(ngx_http_webhook_lock_waiter_t *w,
    ngx_int_t rc)
{
    ngx_uint_t                       leave;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_reply_pt   handler;
    ngx_http_webhook_lock_ticket_t  *t;

    rd = &ngx_http_webhook_lock_worker;

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

    if (leave && rd->active && !rd->exiting) {
        t = ngx_http_webhook_lock_script_leave(w->keys, w->nkeys,
                                               w->keys + w->nkeys, w->nmarks,
                                               &w->node.str, w->ttl);
        if (t) {
            (void) ngx_http_webhook_lock_redis_post(rd, t);
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis wait done: %i, leave:%ui", rc, leave);

    handler = w->handler;

    if (handler) {
        handler(w->data, rc);
    }

    ngx_free(w);
}


/* "T <token> <ms>": the lock is yours after ms; "W ...": ask within ms */

static void
ngx_http_webhook_lock_wait_wake(ngx_http_webhook_lock_redis_t *rd,
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

        ngx_http_webhook_lock_wait_take(w, ms);
        return;
    }

    if (w->ticket) {
        w->after = w->again ? ngx_min(w->after, (ngx_msec_t) ms)
                            : (ngx_msec_t) ms;
        w->again = 1;
        return;
    }

    ngx_http_webhook_lock_wait_sooner(w, ms);

    return;

invalid:

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis %V: unexpected message \"%*s\" on \"%V\"",
                  &rd->conf->name, ngx_min(len, 80), p, &rd->channel);
}


static void
ngx_http_webhook_lock_wait_deadline_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_wait_finish(ev->data,
                                       NGX_HTTP_WEBHOOK_LOCK_REDIS_BUSY);
}


static void
ngx_http_webhook_lock_wait_timer_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_waiter_t *w = ev->data;

    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_worker;

    if (w->taken) {
        ngx_http_webhook_lock_wait_finish(w, w->queued
                                           ? NGX_HTTP_WEBHOOK_LOCK_REDIS_WAITED
                                           : NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN);
        return;
    }

    if (w->ticket) {
        return;
    }

    if (rd->cmd.state != NGX_HTTP_WEBHOOK_LOCK_REDIS_READY) {
        ngx_http_webhook_lock_wait_finish(w, NGX_ERROR);
        return;
    }

    if (rd->pending >= rd->conf->max_pending) {
        ngx_add_timer(&w->timer, NGX_HTTP_WEBHOOK_LOCK_POLL);
        return;
    }

    if (ngx_http_webhook_lock_wait_ask(rd, w) != NGX_OK) {
        ngx_http_webhook_lock_wait_finish(w, NGX_ERROR);
    }
}


/* the command connection went away: whoever waits follows the policy */

static void
ngx_http_webhook_lock_wait_fail_handler(ngx_event_t *ev)
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

        ngx_http_webhook_lock_wait_finish(w, NGX_ERROR);
    }
}



static void
ngx_http_webhook_lock_wait_subscribe(ngx_http_webhook_lock_conn_t *cn)
{
    size_t                          argvlen[2];
    const char                     *argv[2];
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_worker;

    if (ngx_http_webhook_lock_conn_login(cn, 0) != NGX_OK) {
        goto failed;
    }

    argv[0] = "SUBSCRIBE";
    argvlen[0] = sizeof("SUBSCRIBE") - 1;
    argv[1] = (const char *) rd->channel.data;
    argvlen[1] = rd->channel.len;

    if (ngx_http_webhook_lock_conn_setup(cn,
                                         ngx_http_webhook_lock_wait_message,
                                         NULL, 2, argv, argvlen)
        != NGX_OK)
    {
        goto failed;
    }

    return;

failed:

    ngx_http_webhook_lock_conn_fail(cn, "cannot send the setup commands");
}


/*
 * Everything on the subscriber: the confirmation of SUBSCRIBE, then
 * messages.  An error reply never gets here: hiredis takes it for the
 * server's farewell and drops the connection, with the text as reason.
 */

static void
ngx_http_webhook_lock_wait_message(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                     *reply, **e;
    ngx_http_webhook_lock_conn_t   *cn;
    ngx_http_webhook_lock_redis_t  *rd;

    rd = &ngx_http_webhook_lock_worker;
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
            ngx_http_webhook_lock_wait_wake(rd, (u_char *) e[2]->str,
                                             e[2]->len);
            return;
        }

        if (e[0]->len == 9 && ngx_strncmp(e[0]->str, "subscribe", 9) == 0) {
            ngx_http_webhook_lock_conn_setup_done(cn);
            return;
        }
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis %V: unexpected reply of type %d on \"%V\"",
                  &rd->conf->name, reply->type, &rd->channel);
}


/* wake-ups may have been missed meanwhile: every waiter asks once */

static void
ngx_http_webhook_lock_wait_subscribed(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_queue_t                     *q;
    ngx_http_webhook_lock_redis_t   *rd;
    ngx_http_webhook_lock_waiter_t  *w;

    rd = &ngx_http_webhook_lock_worker;

    for (q = ngx_queue_head(&rd->waiters);
         q != ngx_queue_sentinel(&rd->waiters);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_http_webhook_lock_waiter_t, queue);

        if (w->ticket == NULL && !w->taken) {
            ngx_http_webhook_lock_wait_sooner(w, 0);
        }
    }
}




/* a subscriber lost: waiters keep asking now and then, nothing to do */

static void
ngx_http_webhook_lock_wait_nothing(ngx_http_webhook_lock_conn_t *cn)
{
}
