
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_REDIS_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_webhook_lock_redis_conn.h"
#include "ngx_http_webhook_lock_redis_sentinel.h"
#include "ngx_http_webhook_lock_redis_scripts.h"


/* what a take ends with (lk->rc), besides NGX_ERROR */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_BUSY        0   /* held (at the end) */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN       1   /* free at once */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_PROCESSING  2   /* dedup: an id is busy */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_DUPLICATE   3   /* dedup: every id done */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_WAITED      4   /* its turn came */
#define NGX_HTTP_WEBHOOK_LOCK_REDIS_FULL        5   /* too many wait already */


/* how the request that held the lock ended */
typedef enum {
    NGX_HTTP_WEBHOOK_LOCK_END_FAILED = 0,      /* dedup marks dropped */
    NGX_HTTP_WEBHOOK_LOCK_END_DONE,            /* 2xx: marks "done" */
    NGX_HTTP_WEBHOOK_LOCK_END_LEFT             /* the app may still work:
                                                  left to expire */
} ngx_http_webhook_lock_end_e;


#define NGX_HTTP_WEBHOOK_LOCK_TOKEN_LEN  32      /* 128 bits in hex */


typedef struct ngx_http_webhook_lock_handle_s  ngx_http_webhook_lock_handle_t;

typedef void (*ngx_http_webhook_lock_handle_pt)(
    ngx_http_webhook_lock_handle_t *lk);


/*
 * One lock, owned by the request (its ctx, in the request's pool).  The
 * caller fills the first part and calls take; the rest is the lock's.
 * While a command is in flight the Redis side holds "op" (a ticket or a
 * waiter, heap memory) and the op holds a pointer back here: whichever
 * ends first detaches the other (cancel, or the op's completion), so
 * neither is reached after it is gone.  The answer comes to "handler"
 * from a posted event, never from inside hiredis.
 */

struct ngx_http_webhook_lock_handle_s {
    ngx_str_t                           *keys;
    ngx_uint_t                           nkeys;
    ngx_str_t                           *ids;       /* dedup: message ids */
    ngx_uint_t                           nids;
    ngx_str_t                            inbox;     /* of the dedup marks */
    ngx_msec_t                           ttl;
    ngx_msec_t                           hold;
    ngx_msec_t                           dedup;     /* 0: off */
    ngx_msec_t                           wait;      /* 0: no queue */
    ngx_uint_t                           queue;     /* most waiting */
    ngx_pool_t                          *pool;
    ngx_log_t                           *log;
    ngx_http_webhook_lock_handle_pt      handler;
    void                                *data;

    ngx_int_t                            rc;        /* the answer */
    void                                *op;        /* in flight, or NULL */
    ngx_str_t                           *marks;
    ngx_uint_t                           nmarks;
    ngx_event_t                          event;     /* posted: the answer */
    ngx_event_t                          renew;     /* while held */
    ngx_msec_t                           start;
    ngx_msec_t                           round_trip;
    ngx_msec_t                           acquired;
    u_char                               token[NGX_HTTP_WEBHOOK_LOCK_TOKEN_LEN];
    unsigned                             held:1;
};


typedef struct ngx_http_webhook_lock_waiter_s  ngx_http_webhook_lock_waiter_t;


/* the worker's Redis, shared by the lock and the wait queue */

typedef struct {
    ngx_http_webhook_lock_redis_conf_t  *conf;
    ngx_http_webhook_lock_conn_t         cmd;
    ngx_http_webhook_lock_conn_t         sub;
    ngx_http_webhook_lock_sentinel_t    *sentinels; /* NULL: none */
    ngx_uint_t                           pending;   /* live tickets */
    ngx_queue_t                          deferred;  /* releases to resend */
    ngx_queue_t                          connecting; /* sent once ready */
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
 * Takes every key or none, with a fresh token and "ttl" as the expiry;
 * with "wait", in turn, waiting in the keys' queues for at most that
 * long.  With "ids" (dedup), one mark per message id is checked in the
 * same script first: every one "done" gives _REDIS_DUPLICATE, one held
 * by another request _REDIS_PROCESSING, and nothing is taken then; else
 * the marks not done are set to the token too.
 *
 * NGX_AGAIN: the answer (lk->rc: _REDIS_TAKEN, _WAITED, _BUSY, _FULL,
 * _PROCESSING, _DUPLICATE or NGX_ERROR) comes to lk->handler.  While the
 * worker connects to Redis, it waits for the connection.  NGX_DECLINED:
 * Redis is down or overloaded, the caller applies its failure policy
 * now.  NGX_ERROR: out of memory.
 *
 * Once taken (lk->held), the lock is renewed every third of its ttl
 * until it is released, so that it covers the app's work however long;
 * the ttl is only what it outlives a worker that died.
 */
ngx_int_t ngx_http_webhook_lock_take(ngx_http_webhook_lock_handle_t *lk);

/* the request is going away while taking: no answer comes */
void ngx_http_webhook_lock_cancel(ngx_http_webhook_lock_handle_t *lk);

/*
 * The request that held the lock ends.  _DONE and _FAILED give the keys
 * back (to the first in their queues, where requests wait), after what
 * is left of "hold"; the dedup marks become "done" for "dedup", or are
 * dropped so that a redelivery gets through.  _LEFT keeps the keys and
 * the marks as they are, to expire after the ttl: the app may still be
 * working on the request.  Nobody waits for the answer; while Redis is
 * away the release waits and goes out once it is back.
 */
void ngx_http_webhook_lock_release(ngx_http_webhook_lock_handle_t *lk,
    ngx_http_webhook_lock_end_e end);


/* for the wait queue: too many commands pending, logged */
ngx_int_t ngx_http_webhook_lock_redis_overloaded(
    ngx_http_webhook_lock_redis_t *rd);

/* a command with an answer: sent now or once connected, or NGX_ERROR */
ngx_int_t ngx_http_webhook_lock_redis_submit(
    ngx_http_webhook_lock_redis_t *rd, ngx_http_webhook_lock_ticket_t *t);

/* a command with an answer: sent now, or NGX_ERROR */
ngx_int_t ngx_http_webhook_lock_redis_send(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_ticket_t *t);

/* a command nobody waits for: sent now, or once Redis is back */
ngx_int_t ngx_http_webhook_lock_redis_post(ngx_http_webhook_lock_redis_t *rd,
    ngx_http_webhook_lock_ticket_t *t);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_REDIS_H_INCLUDED_ */
