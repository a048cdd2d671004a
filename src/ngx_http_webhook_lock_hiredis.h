
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
 * Worker shutdown asks the connection to close: "force" is 0 on a
 * graceful shutdown (the connection is marked idle), 1 when
 * worker_shutdown_timeout closes every connection.  The handler runs
 * outside any hiredis callback and may call redisAsyncFree(ac).
 */
typedef void (*ngx_http_webhook_lock_hiredis_close_pt)(redisAsyncContext *ac,
    ngx_uint_t force);


/*
 * Another transport on the socket (TLS): the adapter keeps the
 * connection, its events and hiredis's hooks, and hands every ready
 * event to read or write instead of redisAsyncHandleRead/Write, which
 * would read() and write() the socket themselves.  close runs from the
 * adapter's cleanup, before hiredis closes the socket.
 */
typedef void (*ngx_http_webhook_lock_hiredis_io_pt)(void *data);

typedef struct {
    ngx_http_webhook_lock_hiredis_io_pt  read;
    ngx_http_webhook_lock_hiredis_io_pt  write;
    ngx_http_webhook_lock_hiredis_io_pt  close;
} ngx_http_webhook_lock_hiredis_io_t;


/*
 * Drives a hiredis async context from nginx's event loop: the context's
 * socket becomes an nginx connection, hiredis's add/del read/write hooks
 * become nginx events.  hiredis keeps owning (and closes) the socket.
 */
ngx_int_t ngx_http_webhook_lock_hiredis_attach(redisAsyncContext *ac,
    ngx_log_t *log);

/* after attach, before the connect completes; returns the connection */
ngx_connection_t *ngx_http_webhook_lock_hiredis_set_io(redisAsyncContext *ac,
    ngx_http_webhook_lock_hiredis_io_t *io, void *data);

/* after attach; without a handler a shutdown request is ignored */
void ngx_http_webhook_lock_hiredis_set_close(redisAsyncContext *ac,
    ngx_http_webhook_lock_hiredis_close_pt handler);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_HIREDIS_H_INCLUDED_ */
