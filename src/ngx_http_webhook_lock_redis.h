
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_REDIS_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef struct {
    ngx_str_t           name;             /* as configured, for logs */
    ngx_str_t           host;             /* IP text or unix path, with
                                             a NUL after it */
    in_port_t           port;             /* 0: unix socket */
    ngx_str_t           password;         /* len == 0: no AUTH */
    ngx_int_t           db;
    ngx_msec_t          connect_timeout;
    ngx_msec_t          timeout;
    ngx_uint_t          max_pending;
    ngx_flag_t          dedup;            /* load the dedup scripts */
    ngx_flag_t          queue;            /* some location waits: the
                                             queue script, a subscriber */
} ngx_http_webhook_lock_redis_conf_t;


/* what an acquire or a wait ends with, besides NGX_ERROR */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_BUSY        0   /* held (at the end) */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN       1   /* free at once */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_PROCESSING  2   /* dedup: an id is busy */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_DUPLICATE   3   /* dedup: every id done */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_WAITED      4   /* its turn came */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_FULL        5   /* too many wait already */


typedef struct ngx_http_webhook_lock_ticket_s  ngx_http_webhook_lock_ticket_t;
typedef struct ngx_http_webhook_lock_waiter_s  ngx_http_webhook_lock_waiter_t;

/*
 * rc: the command's integer result (>= 0), or NGX_ERROR when Redis
 * answered with an error, timed out, or the connection went away.
 */
typedef void (*ngx_http_webhook_lock_reply_pt)(void *data, ngx_int_t rc);


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
 * Takes every key or none, as acquire does, but in turn: while a key is
 * held, the caller waits in the key's queue, behind the requests queued
 * before it on any worker or instance, for at most "wait", with at most
 * "max" in one queue.  The handler gets NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN,
 * _WAITED, _BUSY (the wait ran out), _FULL or NGX_ERROR (the connection
 * went away: whoever waits fails at once).  Marks as for acquire, checked
 * when its turn comes (every one done: _DUPLICATE at once, even while
 * waiting).  NULL as for acquire.
 */
ngx_http_webhook_lock_waiter_t *ngx_http_webhook_lock_redis_wait(
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks,
    ngx_str_t *token, ngx_msec_t ttl, ngx_msec_t wait, ngx_uint_t max,
    ngx_http_webhook_lock_reply_pt handler, void *data);

/*
 * In the wait's handler: how long Redis took to give its first answer
 * (the lock, or a place in the queue); the rest of the wait was waiting.
 */
ngx_msec_t ngx_http_webhook_lock_redis_round_trip(
    ngx_http_webhook_lock_waiter_t *w);

/*
 * Release for keys taken by a wait, marks settled as by release: each
 * key still holding "token" goes to the first request in its queue
 * (after what is left of "hold"), or is released as by release.
 */
ngx_int_t ngx_http_webhook_lock_redis_handoff(ngx_str_t *keys,
    ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks, ngx_str_t *token,
    ngx_msec_t hold, ngx_msec_t done);

/*
 * The waiting caller is gone: out of the queues, and a lock handed to it
 * meanwhile goes on to the next; its handler will not be called.
 */
void ngx_http_webhook_lock_redis_leave(ngx_http_webhook_lock_waiter_t *w);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_REDIS_H_INCLUDED_ */
