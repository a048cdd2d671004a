
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_webhook_lock_redis_conn.h"
#include "ngx_http_webhook_lock_redis_sentinel.h"
#include "ngx_http_webhook_lock_hiredis.h"
#include "ngx_http_webhook_lock_redis_tls.h"


#define NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MIN  50
#define NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MAX  2000


static void ngx_http_webhook_lock_conn_resolved(ngx_resolver_ctx_t *ctx);
static void ngx_http_webhook_lock_conn_open(ngx_http_webhook_lock_conn_t *cn,
    const char *host, in_port_t port);
static void ngx_http_webhook_lock_conn_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_webhook_lock_conn_disconnected(
    const redisAsyncContext *ac, int status);
static void ngx_http_webhook_lock_conn_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_webhook_lock_conn_ready(ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_conn_down(ngx_http_webhook_lock_conn_t *cn,
    const char *reason);
static void ngx_http_webhook_lock_conn_gone(ngx_http_webhook_lock_conn_t *cn,
    const char *reason);
static void ngx_http_webhook_lock_conn_close(ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_conn_schedule(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_conn_close_handler(redisAsyncContext *ac,
    ngx_uint_t force);
static void ngx_http_webhook_lock_conn_connect_timeout(ngx_event_t *ev);
static void ngx_http_webhook_lock_conn_reconnect(ngx_event_t *ev);
static void ngx_http_webhook_lock_conn_drop_handler(ngx_event_t *ev);


void
ngx_http_webhook_lock_conn_init(ngx_http_webhook_lock_conn_t *cn,
    ngx_http_webhook_lock_redis_conf_t *conf, ngx_log_t *log,
    const char *role, void *data)
{
    cn->conf = conf;
    cn->addr = &conf->server;
    cn->role = role;
    cn->data = data;
    cn->backoff = NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MIN;

    /* none of these may keep a worker from exiting */

    cn->connect.handler = ngx_http_webhook_lock_conn_connect_timeout;
    cn->connect.data = cn;
    cn->connect.log = log;
    cn->connect.cancelable = 1;

    cn->reconnect.handler = ngx_http_webhook_lock_conn_reconnect;
    cn->reconnect.data = cn;
    cn->reconnect.log = log;
    cn->reconnect.cancelable = 1;

    cn->drop.handler = ngx_http_webhook_lock_conn_drop_handler;
    cn->drop.data = cn;
    cn->drop.log = log;
}


void
ngx_http_webhook_lock_conn_connect(ngx_http_webhook_lock_conn_t *cn)
{
    if (cn->state != NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN || cn->exiting) {
        return;
    }

    /* from here on, requests wait for the connection, within its timeout */

    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_CONNECTING;

    if (!cn->connect.timer_set) {
        ngx_add_timer(&cn->connect, cn->conf->connect_timeout);
    }

    if (cn->locate) {
        cn->locating = 1;
        cn->locate(cn);
        return;
    }

    ngx_http_webhook_lock_conn_connect_addr(cn, cn->addr);
}


void
ngx_http_webhook_lock_conn_connect_addr(ngx_http_webhook_lock_conn_t *cn,
    ngx_http_webhook_lock_redis_addr_t *addr)
{
    ngx_resolver_ctx_t                  *ctx, temp;
    ngx_http_webhook_lock_redis_conf_t  *rcf;

    rcf = cn->conf;

    cn->locating = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis%s connect to %V", cn->role, &addr->name);

    /* the connect timeout covers the name's resolution too */

    if (!addr->resolve) {
        ngx_http_webhook_lock_conn_open(cn, (const char *) addr->host.data,
                                        addr->port);
        return;
    }

    /* a name known only now (a sentinel's answer): hiredis would block */

    if (rcf->resolver == NULL) {
        ngx_http_webhook_lock_conn_drop(cn, "a host name to connect to, "
                                        "and no \"resolver\" in http");
        return;
    }

    temp.name = addr->host;

    ctx = ngx_resolve_start(rcf->resolver, &temp);
    if (ctx == NULL || ctx == NGX_NO_RESOLVER) {
        ngx_http_webhook_lock_conn_drop(cn, "cannot start resolving");
        return;
    }

    ctx->name = addr->host;
    ctx->handler = ngx_http_webhook_lock_conn_resolved;
    ctx->data = cn;
    ctx->timeout = rcf->resolver_timeout;

    cn->resolving = ctx;
    cn->port = addr->port;

    /* the handler may run before this returns, with a cached answer */

    if (ngx_resolve_name(ctx) != NGX_OK) {
        cn->resolving = NULL;
        ngx_http_webhook_lock_conn_drop(cn, "cannot start resolving");
    }
}


static void
ngx_http_webhook_lock_conn_resolved(ngx_resolver_ctx_t *ctx)
{
    ngx_http_webhook_lock_conn_t *cn = ctx->data;

    u_char     reason[NGX_MAX_ERROR_STR], *p;
    ngx_str_t  host;

    cn->resolving = NULL;

    if (ctx->state || ctx->naddrs == 0) {
        p = ngx_snprintf(reason, sizeof(reason) - 1,
                         "%V could not be resolved (%i: %s)", &ctx->name,
                         ctx->state, ngx_resolver_strerror(ctx->state));
        *p = '\0';

        ngx_resolve_name_done(ctx);
        ngx_http_webhook_lock_conn_drop(cn, (char *) reason);
        return;
    }

    /* hiredis takes the address as text: the first one */

    host.data = cn->host;
    host.len = ngx_sock_ntop(ctx->addrs[0].sockaddr, ctx->addrs[0].socklen,
                             cn->host, NGX_SOCKADDR_STRLEN - 1, 0);
    cn->host[host.len] = '\0';

    ngx_resolve_name_done(ctx);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis%s resolved: %V", cn->role, &host);

    ngx_http_webhook_lock_conn_open(cn, (const char *) cn->host, cn->port);
}


static void
ngx_http_webhook_lock_conn_open(ngx_http_webhook_lock_conn_t *cn,
    const char *host, in_port_t port)
{
    redisAsyncContext  *ac;

    /* non-blocking; host is an address or a path, nothing to resolve */

    if (port) {
        ac = redisAsyncConnect(host, port);

    } else {
        ac = redisAsyncConnectUnix(host);
    }

    if (ac == NULL) {
        ngx_http_webhook_lock_conn_drop(cn, "cannot allocate a context");
        return;
    }

    if (ac->err) {
        ngx_http_webhook_lock_conn_down(cn, ac->c.errstr);
        redisAsyncFree(ac);
        ngx_http_webhook_lock_conn_drop(cn, "connect failed");
        return;
    }

    if (ngx_http_webhook_lock_hiredis_attach(ac, ngx_cycle->log) != NGX_OK) {
        redisAsyncFree(ac);
        ngx_http_webhook_lock_conn_drop(cn, "cannot attach a connection");
        return;
    }

#if (NGX_SSL)
    if (cn->conf->tls
        && ngx_http_webhook_lock_redis_tls_attach(ac, cn->conf) != NGX_OK)
    {
        redisAsyncFree(ac);
        ngx_http_webhook_lock_conn_drop(cn, "cannot attach TLS");
        return;
    }
#endif

    ngx_http_webhook_lock_hiredis_set_close(ac,
                                      ngx_http_webhook_lock_conn_close_handler);

    ac->data = cn;

    cn->ac = ac;
    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_CONNECTING;

    (void) redisAsyncSetDisconnectCallback(ac,
                                       ngx_http_webhook_lock_conn_disconnected);

    /* waits for the socket to become writable: the connect is done then */

    (void) redisAsyncSetConnectCallback(ac,
                                        ngx_http_webhook_lock_conn_connected);
}


static void
ngx_http_webhook_lock_conn_connected(const redisAsyncContext *ac, int status)
{
    ngx_http_webhook_lock_conn_t  *cn;

    cn = ac->data;

    if (ac != cn->ac) {
        return;
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns */
        ngx_http_webhook_lock_conn_gone(cn, ac->c.errstr);
        return;
    }

    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP;
    cn->setup = 0;

    cn->init(cn);

    if (cn->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP && cn->setup == 0) {
        ngx_http_webhook_lock_conn_ready(cn);
    }
}


static void
ngx_http_webhook_lock_conn_disconnected(const redisAsyncContext *ac,
    int status)
{
    ngx_http_webhook_lock_conn_t  *cn;

    cn = ac->data;

    /* not the current context: we freed it, and said why */

    if (ac != cn->ac) {
        return;
    }

    ngx_http_webhook_lock_conn_gone(cn, (status == REDIS_OK
                                         || ac->c.errstr[0] == '\0')
                                        ? "connection closed"
                                        : ac->c.errstr);
}


ngx_int_t
ngx_http_webhook_lock_conn_login(ngx_http_webhook_lock_conn_t *cn,
    ngx_uint_t select)
{
    int                                  argc;
    u_char                               db[NGX_INT_T_LEN];
    size_t                               argvlen[3];
    const char                          *argv[3];
    ngx_http_webhook_lock_redis_conf_t  *rcf;

    rcf = cn->conf;

    if (rcf->password.len) {
        argc = 0;

        argv[argc] = "AUTH";
        argvlen[argc++] = sizeof("AUTH") - 1;

        /* Redis 6 ACL: AUTH user password */

        if (rcf->user.len) {
            argv[argc] = (const char *) rcf->user.data;
            argvlen[argc++] = rcf->user.len;
        }

        argv[argc] = (const char *) rcf->password.data;
        argvlen[argc++] = rcf->password.len;

        if (ngx_http_webhook_lock_conn_setup(cn,
                                         ngx_http_webhook_lock_conn_setup_reply,
                                         "AUTH", argc, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (select && rcf->db) {
        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", rcf->db) - db;

        if (ngx_http_webhook_lock_conn_setup(cn,
                                         ngx_http_webhook_lock_conn_setup_reply,
                                         "SELECT", 2, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    /* what a sentinel said may be stale: a replica is no place for locks */

    if (cn->locator && ngx_http_webhook_lock_sentinel_role(cn) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Pipelined, before anything else on the connection: one round trip for
 * all of them.  Commands wait for the replies (the state turns READY),
 * so a wrong password or a hung Redis fails requests at once instead of
 * making them wait behind the setup.
 */

ngx_int_t
ngx_http_webhook_lock_conn_setup(ngx_http_webhook_lock_conn_t *cn,
    redisCallbackFn *fn, void *privdata, int argc, const char **argv,
    const size_t *argvlen)
{
    if (redisAsyncCommandArgv(cn->ac, fn, privdata, argc, argv, argvlen)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    cn->setup++;

    return NGX_OK;
}


void
ngx_http_webhook_lock_conn_setup_done(ngx_http_webhook_lock_conn_t *cn)
{
    if (cn->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP && --cn->setup == 0) {
        ngx_http_webhook_lock_conn_ready(cn);
    }
}


static void
ngx_http_webhook_lock_conn_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    char                          *name = privdata;

    u_char                        *p, reason[NGX_MAX_ERROR_STR];
    redisReply                    *reply;
    ngx_http_webhook_lock_conn_t  *cn;

    cn = ac->data;
    reply = r;

    /* NULL: the context is going away, which is logged where it happens */

    if (reply == NULL
        || ac != cn->ac
        || cn->state != NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP)
    {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* the error text only: never the password */

        p = ngx_snprintf(reason, sizeof(reason) - 1, "\"%s\" failed: %*s",
                         name, (size_t) reply->len, reply->str);
        *p = '\0';

        ngx_http_webhook_lock_conn_fail(cn, (char *) reason);
        return;
    }

    ngx_http_webhook_lock_conn_setup_done(cn);
}


static void
ngx_http_webhook_lock_conn_ready(ngx_http_webhook_lock_conn_t *cn)
{
    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_READY;
    cn->backoff = NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MIN;

    if (cn->connect.timer_set) {
        ngx_del_timer(&cn->connect);
    }

    if (cn->down) {
        cn->down = 0;
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "redis %V%s is back", &cn->conf->name, cn->role);

    } else {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "webhook redis %V%s ready", &cn->conf->name,
                       cn->role);
    }

    cn->ready_handler(cn);
}


/* once per outage, not once per retry; "is back" ends it */

static void
ngx_http_webhook_lock_conn_down(ngx_http_webhook_lock_conn_t *cn,
    const char *reason)
{
    if (cn->exiting) {
        return;
    }

    if (cn->down) {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "webhook redis %V%s still down: %s",
                       &cn->conf->name, cn->role, reason);
        return;
    }

    cn->down = 1;

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis %V%s is unreachable: %s", &cn->conf->name,
                  cn->role, reason);
}


/* from hiredis's callbacks: the context is being freed by hiredis */

static void
ngx_http_webhook_lock_conn_gone(ngx_http_webhook_lock_conn_t *cn,
    const char *reason)
{
    cn->ac = NULL;
    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN;

    if (cn->connect.timer_set) {
        ngx_del_timer(&cn->connect);
    }

    if (cn->drop.posted) {
        ngx_delete_posted_event(&cn->drop);
    }

    ngx_http_webhook_lock_conn_down(cn, reason);
    ngx_http_webhook_lock_conn_schedule(cn);

    cn->lost_handler(cn);
}


/*
 * From inside a hiredis callback the context cannot be freed under
 * hiredis's feet: no more commands go to it, and a posted event frees it
 * once the callback has returned.
 */

void
ngx_http_webhook_lock_conn_fail(ngx_http_webhook_lock_conn_t *cn,
    const char *reason)
{
    ngx_http_webhook_lock_conn_down(cn, reason);

    if (cn->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING) {
        return;
    }

    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING;

    ngx_post_event(&cn->drop, &ngx_posted_events);
}


void
ngx_http_webhook_lock_conn_drop(ngx_http_webhook_lock_conn_t *cn,
    const char *reason)
{
    ngx_http_webhook_lock_conn_down(cn, reason);
    ngx_http_webhook_lock_conn_close(cn);
}


void
ngx_http_webhook_lock_conn_exit(ngx_http_webhook_lock_conn_t *cn)
{
    cn->exiting = 1;

    if (cn->reconnect.timer_set) {
        ngx_del_timer(&cn->reconnect);
    }

    ngx_http_webhook_lock_conn_close(cn);
}


void
ngx_http_webhook_lock_conn_restart(ngx_http_webhook_lock_conn_t *cn)
{
    if (cn->exiting) {
        return;
    }

    ngx_http_webhook_lock_conn_close(cn);

    if (cn->reconnect.timer_set) {
        ngx_del_timer(&cn->reconnect);
    }

    cn->backoff = NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MIN;

    ngx_http_webhook_lock_conn_connect(cn);
}


static void
ngx_http_webhook_lock_conn_close(ngx_http_webhook_lock_conn_t *cn)
{
    redisAsyncContext                    *ac;
    ngx_http_webhook_lock_redis_state_e   state;

    ac = cn->ac;
    state = cn->state;

    /* first: the callbacks below must find no context to send to */

    cn->ac = NULL;
    cn->state = NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN;
    cn->locating = 0;

    if (cn->connect.timer_set) {
        ngx_del_timer(&cn->connect);
    }

    if (cn->drop.posted) {
        ngx_delete_posted_event(&cn->drop);
    }

    if (cn->resolving) {
        ngx_resolve_name_done(cn->resolving);
        cn->resolving = NULL;
    }

    if (ac) {
        /* pending callbacks run with NULL, then the adapter's cleanup */
        redisAsyncFree(ac);
    }

    /* what waited for it, while it was connected or being made, fails */

    if (state != NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN) {
        cn->lost_handler(cn);
    }

    ngx_http_webhook_lock_conn_schedule(cn);
}


static void
ngx_http_webhook_lock_conn_schedule(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_msec_t  delay;

    if (cn->exiting || cn->reconnect.timer_set) {
        return;
    }

    /* jitter keeps the workers from knocking all at once */

    delay = cn->backoff + (ngx_msec_t) ngx_random() % (cn->backoff / 4 + 1);

    cn->backoff = ngx_min(cn->backoff * 2, NGX_HTTP_WEBHOOK_LOCK_BACKOFF_MAX);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis%s reconnect in %Mms", cn->role, delay);

    ngx_add_timer(&cn->reconnect, delay);
}


static void
ngx_http_webhook_lock_conn_close_handler(redisAsyncContext *ac,
    ngx_uint_t force)
{
    ngx_http_webhook_lock_conn_t  *cn;

    cn = ac->data;

    if (ac != cn->ac) {
        return;
    }

    /*
     * A graceful shutdown waits for timers, never for connections: the
     * worker lives on while its requests do, and their releases (and
     * their waits' wake-ups) still need the connections.  exit_process
     * frees them.
     */

    if (!force) {
        return;
    }

    /* worker_shutdown_timeout: every request is being closed as well */

    cn->shutdown_handler(cn);
}


static void
ngx_http_webhook_lock_conn_connect_timeout(ngx_event_t *ev)
{
    ngx_http_webhook_lock_conn_drop(ev->data, "connect timed out");
}


static void
ngx_http_webhook_lock_conn_reconnect(ngx_event_t *ev)
{
    ngx_http_webhook_lock_conn_connect(ev->data);
}


static void
ngx_http_webhook_lock_conn_drop_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_conn_t *cn = ev->data;

    if (cn->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING) {
        ngx_http_webhook_lock_conn_close(cn);
    }
}
