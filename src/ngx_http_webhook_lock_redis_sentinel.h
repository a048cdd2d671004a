
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_REDIS_SENTINEL_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_REDIS_SENTINEL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_webhook_lock_redis_conn.h"


typedef struct ngx_http_webhook_lock_sentinel_s
    ngx_http_webhook_lock_sentinel_t;


/* a worker's: the sentinels it asks, and the one it listens to */
ngx_http_webhook_lock_sentinel_t *ngx_http_webhook_lock_sentinel_init(
    ngx_cycle_t *cycle, ngx_http_webhook_lock_redis_conf_t *rcf);

/* a connection to the master: located first, moved on a switch */
ngx_int_t ngx_http_webhook_lock_sentinel_attach(
    ngx_http_webhook_lock_sentinel_t *st, ngx_http_webhook_lock_conn_t *cn);

void ngx_http_webhook_lock_sentinel_exit(ngx_http_webhook_lock_sentinel_t *st);

/* in the setup of a located connection: ROLE, which must say "master" */
ngx_int_t ngx_http_webhook_lock_sentinel_role(
    ngx_http_webhook_lock_conn_t *cn);

/*
 * An error reply on a located connection: READONLY means the master is a
 * replica now; the connection is dropped to locate the master again, and
 * the reply is to be taken as lost with it (1).  Else 0.
 */
ngx_int_t ngx_http_webhook_lock_sentinel_readonly(
    ngx_http_webhook_lock_conn_t *cn, redisAsyncContext *ac,
    redisReply *reply);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_REDIS_SENTINEL_H_INCLUDED_ */
