
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_REDIS_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_webhook_lock_redis_conn.h"
#include "ngx_http_webhook_lock_redis_scripts.h"


/* what an acquire or a wait ends with, besides NGX_ERROR */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_BUSY        0   /* held (at the end) */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN       1   /* free at once */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_PROCESSING  2   /* dedup: an id is busy */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_DUPLICATE   3   /* dedup: every id done */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_WAITED      4   /* its turn came */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_FULL        5   /* too many wait already */


typedef struct ngx_http_webhook_lock_waiter_s  ngx_http_webhook_lock_waiter_t;


/* the worker's Redis, shared by the lock and the wait queue */

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


/* one per worker */
extern ngx_http_webhook_lock_redis_t  ngx_http_webhook_lock_worker;


ngx_int_t ngx_http_webhook_lock_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_webhook_lock_redis_conf_t *rcf);
void ngx_http_webhook_lock_redis_exit_process(ngx_cycle_t *cycle);

/*
 * Takes every key or none, with "token" as the value and "ttl" as the
 * expiry.  The handler gets 1 (taken), 0 (some key is held) or NGX_ERROR.
 * Returns NULL when no command can be sent now (not connected, too many
 * pending): the caller applies its failure policy at once.
 *
 * "marks" (nmarks > 0: dedup) are one key per message id, checked in the
 * same script first: every one "done" gives _REDIS_DUPLICATE, one held
 * by another request _REDIS_PROCESSING, and nothing is taken then; else
 * the keys are taken and the marks not done are set to "token" too.
 */
ngx_http_webhook_lock_ticket_t *ngx_http_webhook_lock_redis_acquire(
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks,
    ngx_str_t *token, ngx_msec_t ttl, ngx_http_webhook_lock_reply_pt handler,
    void *data);

/*
 * Gives back the keys that still hold "token": deleted, or with "hold"
 * > 0 left to expire after that many milliseconds.  Nobody waits for the
 * answer.  While Redis is away the release waits (max_pending of them at
 * most) and goes out once it is back, with what is left of the hold.
 * NGX_ERROR: dropped; the keys expire by their ttl.
 *
 * In the same script, with "done" > 0 every mark not done yet becomes
 * "done" for that many milliseconds; with "done" == 0 the marks still
 * holding "token" are deleted, so that a redelivery gets through.
 */
ngx_int_t ngx_http_webhook_lock_redis_release(ngx_str_t *keys,
    ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token,
    ngx_msec_t hold, ngx_msec_t done);

/* the caller is gone: its handler will not be called */
void ngx_http_webhook_lock_redis_orphan(ngx_http_webhook_lock_ticket_t *t);

/*
 * Release for keys taken by a wait, marks settled as by release: each
 * key still holding "token" goes to the first request in its queue
 * (after what is left of "hold"), or is released as by release.
 */
ngx_int_t ngx_http_webhook_lock_redis_handoff(ngx_str_t *keys,
    ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token,
    ngx_msec_t hold, ngx_msec_t done);

/* for the wait queue: too many commands pending, logged */
ngx_int_t ngx_http_webhook_lock_redis_overloaded(
    ngx_http_webhook_lock_redis_t *rd);

/* a command with an answer: sent now, or NGX_ERROR */
ngx_int_t ngx_http_webhook_lock_redis_send(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_ticket_t *t);

/* a command nobody waits for: sent now, or once Redis is back */
ngx_int_t ngx_http_webhook_lock_redis_post(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_ticket_t *t);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_REDIS_H_INCLUDED_ */
