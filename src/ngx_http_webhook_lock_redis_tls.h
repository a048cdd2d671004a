
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_REDIS_TLS_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_REDIS_TLS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/async.h>

#include "ngx_http_webhook_lock_redis_conf.h"


/* rediss://: the SSL context, from the tls_* parameters */
char *ngx_http_webhook_lock_redis_tls_conf(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf);

#if (NGX_SSL)

/*
 * After ngx_http_webhook_lock_hiredis_attach(), before the connect
 * completes: TLS on the context's socket.  hiredis keeps formatting
 * commands and parsing replies; the connect callback runs once the
 * handshake and the checks of the certificate are done.
 */
ngx_int_t ngx_http_webhook_lock_redis_tls_attach(redisAsyncContext *ac,
    ngx_http_webhook_lock_redis_conf_t *rcf);

#endif


#endif /* _NGX_HTTP_WEBHOOK_LOCK_REDIS_TLS_H_INCLUDED_ */
