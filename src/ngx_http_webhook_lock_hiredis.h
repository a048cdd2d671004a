
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_HIREDIS_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_HIREDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/async.h>


/*
 * Drives a hiredis async context from nginx's event loop: the context's
 * socket becomes an nginx connection, hiredis's add/del read/write hooks
 * become nginx events.  hiredis keeps owning (and closes) the socket.
 */
ngx_int_t ngx_http_webhook_lock_hiredis_attach(redisAsyncContext *ac,
    ngx_log_t *log);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_HIREDIS_H_INCLUDED_ */
