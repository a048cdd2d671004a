
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/sds.h>

#include "ngx_http_webhook_lock_redis_tls.h"
#include "ngx_http_webhook_lock_hiredis.h"


#if (NGX_SSL)

/* OpenSSL's default; nginx's proxy_ssl_verify_depth 1 is too short */
#define NGX_HTTP_WEBHOOK_LOCK_TLS_VERIFY_DEPTH  100

#define NGX_HTTP_WEBHOOK_LOCK_TLS_POOL_SIZE     512

/* SSL_read() calls of 16 KiB in one read event, then the next loop */
#define NGX_HTTP_WEBHOOK_LOCK_TLS_READS         16


/* exported by libhiredis 0.14.1, not declared in its async.h */
void redisProcessCallbacks(redisAsyncContext *ac);


typedef struct {
    ngx_connection_t                    *connection;  /* data: the ac */
    ngx_http_webhook_lock_redis_conf_t  *conf;
    ngx_pool_t                          *pool;        /* holds this */
    unsigned                             busy:1;      /* in hiredis's
                                                     callbacks */
    unsigned                             closed:1;    /* meanwhile */
    unsigned                             connected:1;  /* TCP */
    unsigned                             handshaked:1;
    unsigned                             read_blocked:1;  /* SSL_read()
                                                     wants to write */
    unsigned                             write_blocked:1; /* SSL_write()
                                                     wants to read */
} ngx_http_webhook_lock_redis_tls_t;


static void ngx_http_webhook_lock_redis_tls_read(void *data);
static void ngx_http_webhook_lock_redis_tls_write(void *data);
static void ngx_http_webhook_lock_redis_tls_close(void *data);
static void ngx_http_webhook_lock_redis_tls_start(
    ngx_http_webhook_lock_redis_tls_t *t);
static void ngx_http_webhook_lock_redis_tls_handshake(
    ngx_http_webhook_lock_redis_tls_t *t);
static void ngx_http_webhook_lock_redis_tls_established(
    ngx_http_webhook_lock_redis_tls_t *t);
static ngx_int_t ngx_http_webhook_lock_redis_tls_recv(
    ngx_http_webhook_lock_redis_tls_t *t);
static ngx_int_t ngx_http_webhook_lock_redis_tls_send(
    ngx_http_webhook_lock_redis_tls_t *t);
static void ngx_http_webhook_lock_redis_tls_error(int sslerr, ngx_err_t err,
    const char *what, char *buf, size_t size);
static void ngx_http_webhook_lock_redis_tls_fail(
    ngx_http_webhook_lock_redis_tls_t *t, int type, const char *reason);
static ngx_int_t ngx_http_webhook_lock_redis_tls_unbusy(
    ngx_http_webhook_lock_redis_tls_t *t);
static ngx_uint_t ngx_http_webhook_lock_redis_tls_is_ip(ngx_str_t *name);


static ngx_http_webhook_lock_hiredis_io_t
    ngx_http_webhook_lock_redis_tls_io =
{
    ngx_http_webhook_lock_redis_tls_read,
    ngx_http_webhook_lock_redis_tls_write,
    ngx_http_webhook_lock_redis_tls_close
};


ngx_int_t
ngx_http_webhook_lock_redis_tls_attach(redisAsyncContext *ac,
    ngx_http_webhook_lock_redis_conf_t *rcf)
{
    ngx_pool_t                         *pool;
    ngx_connection_t                   *c;
    ngx_http_webhook_lock_redis_tls_t  *t;

    /* ngx_ssl_create_connection() allocates from the connection's pool */

    pool = ngx_create_pool(NGX_HTTP_WEBHOOK_LOCK_TLS_POOL_SIZE,
                           ngx_cycle->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    t = ngx_pcalloc(pool, sizeof(ngx_http_webhook_lock_redis_tls_t));
    if (t == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    c = ngx_http_webhook_lock_hiredis_set_io(ac,
                                        &ngx_http_webhook_lock_redis_tls_io, t);

    c->pool = pool;

    t->connection = c;
    t->conf = rcf;
    t->pool = pool;

    return NGX_OK;
}


static void
ngx_http_webhook_lock_redis_tls_read(void *data)
{
    ngx_http_webhook_lock_redis_tls_t *t = data;

    if (!t->connected) {
        ngx_http_webhook_lock_redis_tls_start(t);
        return;
    }

    if (!t->handshaked) {
        ngx_http_webhook_lock_redis_tls_handshake(t);
        return;
    }

    if (ngx_http_webhook_lock_redis_tls_recv(t) != NGX_OK) {
        return;
    }

    if (t->write_blocked) {
        (void) ngx_http_webhook_lock_redis_tls_send(t);
    }
}


static void
ngx_http_webhook_lock_redis_tls_write(void *data)
{
    ngx_http_webhook_lock_redis_tls_t *t = data;

    if (!t->connected) {
        ngx_http_webhook_lock_redis_tls_start(t);
        return;
    }

    if (!t->handshaked) {
        ngx_http_webhook_lock_redis_tls_handshake(t);
        return;
    }

    if (t->read_blocked) {
        if (ngx_http_webhook_lock_redis_tls_recv(t) != NGX_OK) {
            return;
        }
    }

    (void) ngx_http_webhook_lock_redis_tls_send(t);
}


/*
 * From the adapter's cleanup: hiredis closes the socket right after.
 * A close_notify goes out only if the socket takes it at once.  Inside
 * hiredis's callbacks our caller still holds t: it frees it.
 */

static void
ngx_http_webhook_lock_redis_tls_close(void *data)
{
    ngx_http_webhook_lock_redis_tls_t *t = data;

    ngx_connection_t  *c;

    c = t->connection;

    if (c->ssl) {
        if (t->handshaked && !c->error) {
            SSL_set_shutdown(c->ssl->connection, SSL_RECEIVED_SHUTDOWN);

            ERR_clear_error();
            (void) SSL_shutdown(c->ssl->connection);
        }

        ERR_clear_error();

        SSL_free(c->ssl->connection);
        c->ssl = NULL;
    }

    c->pool = NULL;

    if (t->busy) {
        t->closed = 1;
        return;
    }

    ngx_destroy_pool(t->pool);
}


/* the socket is writable for the first time: the TCP connect is done */

static void
ngx_http_webhook_lock_redis_tls_start(ngx_http_webhook_lock_redis_tls_t *t)
{
    int                                  err;
    u_char                               reason[NGX_MAX_ERROR_STR], *p;
    socklen_t                            len;
    ngx_connection_t                    *c;
    ngx_http_webhook_lock_redis_conf_t  *rcf;

    c = t->connection;
    rcf = t->conf;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        /* the wording of hiredis's own failed connect */
        p = ngx_strerror(err, reason, sizeof(reason) - 1);
        *p = '\0';

        ngx_http_webhook_lock_redis_tls_fail(t, REDIS_ERR_IO,
                                             (char *) reason);
        return;
    }

    t->connected = 1;

    if (ngx_ssl_create_connection(rcf->ssl, c, NGX_SSL_CLIENT) != NGX_OK) {
        ngx_http_webhook_lock_redis_tls_fail(t, REDIS_ERR_OTHER,
                                           "cannot create a TLS connection");
        return;
    }

    /* SNI: names only, never an address (RFC 6066) */

    if (!ngx_http_webhook_lock_redis_tls_is_ip(&rcf->tls_name)
        && SSL_set_tlsext_host_name(c->ssl->connection,
                                    (char *) rcf->tls_name.data)
           == 0)
    {
        ngx_http_webhook_lock_redis_tls_fail(t, REDIS_ERR_OTHER,
                                             "cannot set the TLS name");
        return;
    }

    ngx_http_webhook_lock_redis_tls_handshake(t);
}


/*
 * SSL_do_handshake() rather than ngx_ssl_handshake(): nginx's logs each
 * failure itself, at crit for most, on every retry, and leaves nothing
 * of the reason for the one line the connection layer writes per
 * outage.  Its readiness flags also assume nginx's edge-triggered
 * events, where the adapter keeps level-triggered ones.
 */

static void
ngx_http_webhook_lock_redis_tls_handshake(ngx_http_webhook_lock_redis_tls_t *t)
{
    int                 n, sslerr;
    char                reason[128];
    ngx_err_t           err;
    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    c = t->connection;
    ac = c->data;

    ERR_clear_error();

    n = SSL_do_handshake(c->ssl->connection);

    if (n == 1) {
        ngx_http_webhook_lock_redis_tls_established(t);
        return;
    }

    sslerr = SSL_get_error(c->ssl->connection, n);
    err = (sslerr == SSL_ERROR_SYSCALL) ? ngx_socket_errno : 0;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, c->log, 0,
                   "webhook redis tls handshake: %d", sslerr);

    /* level-triggered: the read interest stays, the write one on demand */

    if (sslerr == SSL_ERROR_WANT_READ) {
        ac->ev.delWrite(ac->ev.data);
        ac->ev.addRead(ac->ev.data);
        return;
    }

    if (sslerr == SSL_ERROR_WANT_WRITE) {
        ac->ev.addWrite(ac->ev.data);
        ac->ev.addRead(ac->ev.data);
        return;
    }

    ngx_http_webhook_lock_redis_tls_error(sslerr, err, "TLS handshake failed",
                                          reason, sizeof(reason));

    c->error = 1;

    ngx_http_webhook_lock_redis_tls_fail(t, REDIS_ERR_IO, reason);
}


/* what __redisAsyncHandleConnect() does once connect(2) is done */

static void
ngx_http_webhook_lock_redis_tls_established(
    ngx_http_webhook_lock_redis_tls_t *t)
{
    X509                                *cert;
    long                                 rc;
    char                                 reason[128];
    ngx_int_t                            match;
    ngx_connection_t                    *c;
    redisAsyncContext                   *ac;
    ngx_http_webhook_lock_redis_conf_t  *rcf;

    c = t->connection;
    ac = c->data;
    rcf = t->conf;

    t->handshaked = 1;
    c->ssl->handshaked = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, c->log, 0,
                   "webhook redis tls: %s %s",
                   SSL_get_version(c->ssl->connection),
                   SSL_get_cipher_name(c->ssl->connection));

    if (rcf->tls_verify) {
        rc = SSL_get_verify_result(c->ssl->connection);

        if (rc != X509_V_OK) {
            ngx_snprintf((u_char *) reason, sizeof(reason) - 1,
                         "certificate verify failed: %s%Z",
                         X509_verify_cert_error_string(rc));
            reason[sizeof(reason) - 1] = '\0';

            ngx_http_webhook_lock_redis_tls_fail(t, REDIS_ERR_IO, reason);
            return;
        }

        /* nginx's check is for names; addresses are matched as such */

        if (ngx_http_webhook_lock_redis_tls_is_ip(&rcf->tls_name)) {
            cert = SSL_get_peer_certificate(c->ssl->connection);

            match = (cert != NULL
                     && X509_check_ip_asc(cert, (char *) rcf->tls_name.data,
                                          0)
                        == 1)
                    ? NGX_OK : NGX_ERROR;

            if (cert) {
                X509_free(cert);
            }

        } else {
            match = ngx_ssl_check_host(c, &rcf->tls_name);
        }

        if (match != NGX_OK) {
            ngx_snprintf((u_char *) reason, sizeof(reason) - 1,
                         "certificate does not match \"%V\"%Z",
                         &rcf->tls_name);
            reason[sizeof(reason) - 1] = '\0';

            ngx_http_webhook_lock_redis_tls_fail(t, REDIS_ERR_IO, reason);
            return;
        }
    }

    ac->c.flags |= REDIS_CONNECTED;

    t->busy = 1;

    if (ac->onConnect) {
        ac->onConnect(ac, REDIS_OK);
    }

    if (ngx_http_webhook_lock_redis_tls_unbusy(t) != NGX_OK) {
        return;
    }

    /* hiredis: always schedule reads after writes; the setup goes now */

    ac->ev.addRead(ac->ev.data);

    if (ngx_http_webhook_lock_redis_tls_send(t) != NGX_OK) {
        return;
    }

    /* read ahead with the handshake's last records: no event for those */

    if (SSL_has_pending(c->ssl->connection) && !c->read->posted) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}


/*
 * Reads until OpenSSL wants more from the socket: records it decrypted
 * already are not the socket's to signal.  Replies then go through
 * hiredis's reader and callbacks as redisAsyncHandleRead() would send
 * them.  NGX_DONE: the context is gone.
 */

static ngx_int_t
ngx_http_webhook_lock_redis_tls_recv(ngx_http_webhook_lock_redis_tls_t *t)
{
    int                 n, sslerr, type;
    char                reason[128];
    u_char              buf[16384];
    ngx_err_t           err;
    ngx_uint_t          i;
    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    c = t->connection;
    ac = c->data;

    t->read_blocked = 0;
    type = 0;

    for (i = 0; /* void */ ; i++) {

        if (i == NGX_HTTP_WEBHOOK_LOCK_TLS_READS) {
            /* more may wait in OpenSSL: the next loop, after the others */

            ngx_log_debug0(NGX_LOG_DEBUG_EVENT, c->log, 0,
                           "webhook redis tls: more to read");

            if (!c->read->posted) {
                ngx_post_event(c->read, &ngx_posted_next_events);
            }

            break;
        }

        ERR_clear_error();

        n = SSL_read(c->ssl->connection, buf, sizeof(buf));

        if (n > 0) {
            /* on failure the reader is in its error state: see below */

            if (redisReaderFeed(ac->c.reader, (const char *) buf, n)
                != REDIS_OK)
            {
                break;
            }

            continue;
        }

        sslerr = SSL_get_error(c->ssl->connection, n);
        err = (sslerr == SSL_ERROR_SYSCALL) ? ngx_socket_errno : 0;

        if (sslerr == SSL_ERROR_WANT_READ) {
            break;
        }

        if (sslerr == SSL_ERROR_WANT_WRITE) {
            t->read_blocked = 1;
            ac->ev.addWrite(ac->ev.data);
            break;
        }

        c->error = 1;

        if (sslerr == SSL_ERROR_ZERO_RETURN) {
            type = REDIS_ERR_EOF;
            ngx_cpystrn((u_char *) reason,
                        (u_char *) "Server closed the connection",
                        sizeof(reason));

        } else {
            type = REDIS_ERR_IO;
            ngx_http_webhook_lock_redis_tls_error(sslerr, err,
                                                  "TLS read failed",
                                                  reason, sizeof(reason));
        }

        break;
    }

    /* the replies read before an error are delivered, as hiredis does */

    t->busy = 1;

    redisProcessCallbacks(ac);

    if (ngx_http_webhook_lock_redis_tls_unbusy(t) != NGX_OK) {
        return NGX_DONE;
    }

    if (type) {
        ngx_http_webhook_lock_redis_tls_fail(t, type, reason);
        return NGX_DONE;
    }

    return NGX_OK;
}


/*
 * hiredis's output buffer, through SSL_write(): all of it, or a retry
 * when the socket is writable again, the buffer then possibly longer and
 * moved (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).  As
 * redisAsyncHandleWrite(): write interest while not all written, read
 * interest always.
 */

static ngx_int_t
ngx_http_webhook_lock_redis_tls_send(ngx_http_webhook_lock_redis_tls_t *t)
{
    int                 n, sslerr;
    char                reason[128];
    ngx_err_t           err;
    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    c = t->connection;
    ac = c->data;

    t->write_blocked = 0;

    while (sdslen(ac->c.obuf) > 0) {

        ERR_clear_error();

        n = SSL_write(c->ssl->connection, ac->c.obuf,
                      (int) sdslen(ac->c.obuf));

        if (n > 0) {
            sdsrange(ac->c.obuf, n, -1);
            continue;
        }

        sslerr = SSL_get_error(c->ssl->connection, n);
        err = (sslerr == SSL_ERROR_SYSCALL) ? ngx_socket_errno : 0;

        if (sslerr == SSL_ERROR_WANT_WRITE) {
            ac->ev.addWrite(ac->ev.data);
            ac->ev.addRead(ac->ev.data);
            return NGX_OK;
        }

        if (sslerr == SSL_ERROR_WANT_READ) {
            t->write_blocked = 1;
            ac->ev.delWrite(ac->ev.data);
            ac->ev.addRead(ac->ev.data);
            return NGX_OK;
        }

        c->error = 1;

        ngx_http_webhook_lock_redis_tls_error(sslerr, err, "TLS write failed",
                                              reason, sizeof(reason));

        ngx_http_webhook_lock_redis_tls_fail(t, REDIS_ERR_IO, reason);

        return NGX_DONE;
    }

    ac->ev.delWrite(ac->ev.data);
    ac->ev.addRead(ac->ev.data);

    return NGX_OK;
}


/* "what: reason" from OpenSSL's error queue, or from errno */

static void
ngx_http_webhook_lock_redis_tls_error(int sslerr, ngx_err_t err,
    const char *what, char *buf, size_t size)
{
    u_char         text[NGX_MAX_ERROR_STR], *p;
    const char    *s;
    unsigned long  n;

    n = ERR_peek_last_error();

    if (n) {
        s = ERR_reason_error_string(n);

        if (s == NULL) {
            ERR_error_string_n(n, (char *) text, sizeof(text));
            s = (char *) text;
        }

    } else if (sslerr == SSL_ERROR_SYSCALL && err) {
        p = ngx_strerror(err, text, sizeof(text) - 1);
        *p = '\0';
        s = (char *) text;

    } else if (sslerr == SSL_ERROR_SYSCALL || sslerr == SSL_ERROR_ZERO_RETURN)
    {
        s = "connection closed by peer";

    } else {
        s = "unknown error";
    }

    p = ngx_snprintf((u_char *) buf, size - 1, "%s: %s", what, s);
    *p = '\0';

    ERR_clear_error();
}


/*
 * The context fails the way hiredis fails it on a read error.  A failed
 * connect calls the connect callback first, as __redisAsyncHandleConnect()
 * does (a callback that freed the context ends it there).  Then the
 * reader is put in its error state, and redisProcessCallbacks() stops at
 * it and disconnects: pending callbacks get NULL, the disconnect callback
 * (after a connect) the reason in ac->errstr, and the context is freed,
 * its socket closed.
 */

static void
ngx_http_webhook_lock_redis_tls_fail(ngx_http_webhook_lock_redis_tls_t *t,
    int type, const char *reason)
{
    redisReader        *r;
    redisAsyncContext  *ac;

    ac = t->connection->data;
    r = ac->c.reader;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, t->connection->log, 0,
                   "webhook redis tls failed: %s", reason);

    if (!(ac->c.flags & REDIS_CONNECTED)) {
        ac->c.err = type;
        ngx_cpystrn((u_char *) ac->c.errstr, (u_char *) reason,
                    sizeof(ac->c.errstr));

        t->busy = 1;

        if (ac->onConnect) {
            ac->onConnect(ac, REDIS_ERR);
        }

        if (ngx_http_webhook_lock_redis_tls_unbusy(t) != NGX_OK) {
            return;
        }
    }

    r->err = type;
    ngx_cpystrn((u_char *) r->errstr, (u_char *) reason, sizeof(r->errstr));

    redisProcessCallbacks(ac);
}


/* NGX_DONE: the context was freed meanwhile, and now t is */

static ngx_int_t
ngx_http_webhook_lock_redis_tls_unbusy(ngx_http_webhook_lock_redis_tls_t *t)
{
    t->busy = 0;

    if (t->closed) {
        ngx_destroy_pool(t->pool);
        return NGX_DONE;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_webhook_lock_redis_tls_is_ip(ngx_str_t *name)
{
#if (NGX_HAVE_INET6)
    u_char  addr6[16];
#endif

    if (ngx_inet_addr(name->data, name->len) != INADDR_NONE) {
        return 1;
    }

#if (NGX_HAVE_INET6)
    if (ngx_inet6_addr(name->data, name->len, addr6) == NGX_OK) {
        return 1;
    }
#endif

    return 0;
}

#endif /* NGX_SSL */


char *
ngx_http_webhook_lock_redis_tls_conf(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf)
{
#if (NGX_SSL)
    u_char              *p;
    ngx_ssl_t           *ssl;
    ngx_pool_cleanup_t  *cln;

    ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    ssl->log = cf->log;

    if (ngx_ssl_create(ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(ssl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ssl;

    rcf->ssl = ssl;

    /* hiredis's output buffer grows, and moves, between two retries */

    SSL_CTX_set_mode(ssl->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

    if (rcf->tls_cert.len
        && ngx_ssl_certificate(cf, ssl, &rcf->tls_cert, &rcf->tls_key, NULL)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (rcf->tls_verify) {
        if (ngx_ssl_trusted_certificate(cf, ssl, &rcf->tls_ca,
                                        NGX_HTTP_WEBHOOK_LOCK_TLS_VERIFY_DEPTH)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (rcf->tls_ca.len == 0
            && SSL_CTX_set_default_verify_paths(ssl->ctx) != 1)
        {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_CTX_set_default_verify_paths() failed");
            return NGX_CONF_ERROR;
        }
    }

    /* for SSL_set_tlsext_host_name() and X509_check_ip_asc() */

    p = ngx_pnalloc(cf->pool, rcf->tls_name.len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    *ngx_cpymem(p, rcf->tls_name.data, rcf->tls_name.len) = '\0';
    rcf->tls_name.data = p;

    return NGX_CONF_OK;

#else

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "rediss:// needs an nginx built with OpenSSL "
                       "(--with-http_ssl_module)");

    return NGX_CONF_ERROR;

#endif
}
