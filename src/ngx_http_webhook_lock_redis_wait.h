
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_REDIS_WAIT_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_REDIS_WAIT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_webhook_lock_redis.h"


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
 * The waiting caller is gone: out of the queues, and a lock handed to it
 * meanwhile goes on to the next; its handler will not be called.
 */
void ngx_http_webhook_lock_redis_leave(ngx_http_webhook_lock_waiter_t *w);


/* for the lock's own code: the worker's start, exit, and a lost Redis */
ngx_int_t ngx_http_webhook_lock_wait_init(ngx_cycle_t *cycle,
    ngx_http_webhook_lock_redis_t *rd);
void ngx_http_webhook_lock_wait_exit(ngx_http_webhook_lock_redis_t *rd);
void ngx_http_webhook_lock_wait_lost(ngx_http_webhook_lock_redis_t *rd);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_REDIS_WAIT_H_INCLUDED_ */
