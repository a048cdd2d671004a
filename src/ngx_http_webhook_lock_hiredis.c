
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_webhook_lock_hiredis.h"


typedef struct {
    ngx_connection_t                        *connection; /* data: the ac */
    ngx_http_webhook_lock_hiredis_close_pt   close;
    ngx_http_webhook_lock_hiredis_io_t      *io;         /* NULL: hiredis
                                                            reads, writes */
    void                                    *io_data;
    unsigned                                 writing:1;  /* in our write
                                                            handler */
} ngx_http_webhook_lock_hiredis_t;


static void ngx_http_webhook_lock_hiredis_read_handler(ngx_event_t *rev);
static void ngx_http_webhook_lock_hiredis_write_handler(ngx_event_t *wev);
static void ngx_http_webhook_lock_hiredis_add_read(void *privdata);
static void ngx_http_webhook_lock_hiredis_del_read(void *privdata);
static void ngx_http_webhook_lock_hiredis_add_write(void *privdata);
static void ngx_http_webhook_lock_hiredis_del_write(void *privdata);
static void ngx_http_webhook_lock_hiredis_cleanup(void *privdata);


ngx_int_t
ngx_http_webhook_lock_hiredis_attach(redisAsyncContext *ac, ngx_log_t *log)
{
    ngx_connection_t                 *c;
    ngx_http_webhook_lock_hiredis_t  *h;

    if (ac->ev.data != NULL) {
        return NGX_ERROR;
    }

    h = ngx_alloc(sizeof(ngx_http_webhook_lock_hiredis_t), log);
    if (h == NULL) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(ac->c.fd, log);
    if (c == NULL) {
        ngx_free(h);
        return NGX_ERROR;
    }

    h->connection = c;
    h->close = NULL;
    h->io = NULL;
    h->io_data = NULL;
    h->writing = 0;

    c->data = ac;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    c->read->handler = ngx_http_webhook_lock_hiredis_read_handler;
    c->write->handler = ngx_http_webhook_lock_hiredis_write_handler;
    c->read->log = log;
    c->write->log = log;

    ac->ev.addRead = ngx_http_webhook_lock_hiredis_add_read;
    ac->ev.delRead = ngx_http_webhook_lock_hiredis_del_read;
    ac->ev.addWrite = ngx_http_webhook_lock_hiredis_add_write;
    ac->ev.delWrite = ngx_http_webhook_lock_hiredis_del_write;
    ac->ev.cleanup = ngx_http_webhook_lock_hiredis_cleanup;
    ac->ev.data = h;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, log, 0,
                   "webhook redis attach: fd:%d *%uA", c->fd, c->number);

    return NGX_OK;
}


ngx_connection_t *
ngx_http_webhook_lock_hiredis_set_io(redisAsyncContext *ac,
    ngx_http_webhook_lock_hiredis_io_t *io, void *data)
{
    ngx_http_webhook_lock_hiredis_t  *h;

    h = ac->ev.data;

    h->io = io;
    h->io_data = data;

    return h->connection;
}


void
ngx_http_webhook_lock_hiredis_set_close(redisAsyncContext *ac,
    ngx_http_webhook_lock_hiredis_close_pt handler)
{
    ngx_http_webhook_lock_hiredis_t  *h;

    h = ac->ev.data;

    h->close = handler;

    /* ngx_close_idle_connections() then tells us when the worker quits */
    h->connection->idle = (handler != NULL);
}


static void
ngx_http_webhook_lock_hiredis_read_handler(ngx_event_t *rev)
{
    ngx_uint_t                        force;
    ngx_connection_t                 *c;
    redisAsyncContext                *ac;
    ngx_http_webhook_lock_hiredis_t  *h;

    c = rev->data;
    ac = c->data;
    h = ac->ev.data;

    if (c->close) {
        force = c->error;

        c->close = 0;
        c->error = 0;

        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, c->log, 0,
                       "webhook redis close, force:%ui", force);

        if (h->close) {
            h->close(ac, force);
        }

        return;
    }

    /* the context, and c with it, may be gone when this returns */

    if (h->io) {
        h->io->read(h->io_data);
        return;
    }

    redisAsyncHandleRead(ac);
}


static void
ngx_http_webhook_lock_hiredis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t                 *c;
    redisAsyncContext                *ac;
    ngx_http_webhook_lock_hiredis_t  *h;

    c = wev->data;
    ac = c->data;
    h = ac->ev.data;

    /* hiredis answers with addWrite (not all written) or delWrite */

    h->writing = 1;

    if (h->io) {
        h->io->write(h->io_data);
        return;
    }

    redisAsyncHandleWrite(ac);
}


/*
 * Level-triggered interest in both directions, epoll included: hiredis
 * reads at most 16 KiB per call, and an edge would strand the rest.
 * A failing ngx_add_event() is logged by nginx; the owner's timers then
 * see the connection stall and drop it.
 */

static void
ngx_http_webhook_lock_hiredis_add_read(void *privdata)
{
    ngx_http_webhook_lock_hiredis_t *h = privdata;

    ngx_event_t  *rev;

    rev = h->connection->read;

    if (rev->active) {
        return;
    }

    (void) ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT);
}


static void
ngx_http_webhook_lock_hiredis_del_read(void *privdata)
{
    ngx_http_webhook_lock_hiredis_t *h = privdata;

    ngx_event_t  *rev;

    rev = h->connection->read;

    if (rev->posted) {
        ngx_delete_posted_event(rev);
    }

    if (!rev->active) {
        return;
    }

    (void) ngx_del_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT);
}


static void
ngx_http_webhook_lock_hiredis_add_write(void *privdata)
{
    ngx_http_webhook_lock_hiredis_t *h = privdata;

    ngx_uint_t          writing;
    ngx_event_t        *wev;
    redisAsyncContext  *ac;

    wev = h->connection->write;
    ac = h->connection->data;

    writing = h->writing;
    h->writing = 0;

    if (wev->active) {
        return;
    }

    if (writing || !(ac->c.flags & REDIS_CONNECTED)) {
        /* a partial write, or a connect in progress: wait for the socket */
        (void) ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
        return;
    }

    /*
     * A new command: written once this pass of the event loop is over,
     * together with every other command queued in it, and with no
     * epoll_ctl() at all when the socket takes it whole.
     */

    if (!wev->posted) {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


static void
ngx_http_webhook_lock_hiredis_del_write(void *privdata)
{
    ngx_http_webhook_lock_hiredis_t *h = privdata;

    ngx_event_t  *wev;

    wev = h->connection->write;

    h->writing = 0;

    if (wev->posted) {
        ngx_delete_posted_event(wev);
    }

    if (!wev->active) {
        return;
    }

    (void) ngx_del_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
}


/*
 * Runs once, from redisAsyncFree() or a failed read, write or connect,
 * possibly inside one of the handlers above.  ngx_close_connection()
 * without the close(): hiredis closes the socket right after.  The
 * connection itself is never freed memory, and nginx skips stale epoll
 * events of a freed connection by its fd and instance bit.
 */

static void
ngx_http_webhook_lock_hiredis_cleanup(void *privdata)
{
    ngx_http_webhook_lock_hiredis_t *h = privdata;

    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    c = h->connection;
    ac = c->data;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, c->log, 0,
                   "webhook redis cleanup: fd:%d", c->fd);

    ac->ev.addRead = NULL;
    ac->ev.delRead = NULL;
    ac->ev.addWrite = NULL;
    ac->ev.delWrite = NULL;
    ac->ev.data = NULL;

    if (h->io) {
        h->io->close(h->io_data);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    /* a real delete, not NGX_CLOSE_EVENT: the fd is not ours to close */

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->read->closed = 1;
    c->write->closed = 1;

    ngx_free_connection(c);

    c->fd = (ngx_socket_t) -1;

    ngx_free(h);
}
