
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_webhook_lock_module.h"
#include "ngx_http_webhook_lock_signature.h"


/* a body this large refreshes the cached clock once it is parsed */
#define NGX_HTTP_WEBHOOK_LOCK_LARGE_BODY  65536

/* the longest Redis key a template may produce */
#define NGX_HTTP_WEBHOOK_LOCK_KEY_MAX  1024


static void ngx_http_webhook_lock_body_handler(ngx_http_request_t *r);
static void ngx_http_webhook_lock_inspect(ngx_http_request_t *r,
    ngx_http_webhook_lock_ctx_t *ctx);
static ngx_int_t ngx_http_webhook_lock_content_type(ngx_http_request_t *r,
    ngx_uint_t format);
static ngx_int_t ngx_http_webhook_lock_body(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_http_webhook_lock_keys(ngx_http_request_t *r,
    ngx_http_webhook_lock_ctx_t *ctx);
static void ngx_http_webhook_lock_acquire(ngx_http_request_t *r,
    ngx_http_webhook_lock_ctx_t *ctx);
static void ngx_http_webhook_lock_acquire_handler(
    ngx_http_webhook_lock_handle_t *lk);
static void ngx_http_webhook_lock_decide(ngx_http_request_t *r,
    ngx_http_webhook_lock_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_webhook_lock_respond(ngx_http_request_t *r,
    ngx_http_webhook_lock_ctx_t *ctx);
static ngx_int_t ngx_http_webhook_lock_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body, time_t retry_after);
static void ngx_http_webhook_lock_cleanup(void *data);
static void ngx_http_webhook_lock_end(void *data);
static ngx_uint_t ngx_http_webhook_lock_answered(ngx_http_request_t *r);


ngx_int_t
ngx_http_webhook_lock_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_pool_cleanup_t                *cln;
    ngx_http_webhook_lock_ctx_t       *ctx;
    ngx_http_webhook_lock_loc_conf_t  *wlcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_webhook_lock_get_ctx(r);

    if (ctx) {
        if (ctx->state == NGX_HTTP_WEBHOOK_LOCK_STATE_READING
            && ctx->redirected)
        {
            /*
             * nginx refused the body while reading it (413, 400, 500) and
             * an error_page took over: the body handler will never run
             */

            ctx->state = NGX_HTTP_WEBHOOK_LOCK_STATE_DONE;
            return NGX_DECLINED;
        }

        if (ctx->state != NGX_HTTP_WEBHOOK_LOCK_STATE_DONE) {
            return NGX_AGAIN;
        }

        if (ctx->redirected) {
            /* an internal redirect or error_page: decided already */
            return NGX_DECLINED;
        }

        return ngx_http_webhook_lock_respond(r, ctx);
    }

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_webhook_lock_module);

    if (wlcf->rules.format == NGX_HTTP_WEBHOOK_LOCK_OFF
        || r->method != NGX_HTTP_POST)
    {
        return NGX_DECLINED;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "webhook lock handler");

    /*
     * The ctx is kept by a pool cleanup: it outlives internal redirects,
     * which wipe r->ctx, and releases the lock when the request is freed.
     */

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_webhook_lock_ctx_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_webhook_lock_ctx_t));

    ctx->request = r;

    cln->handler = ngx_http_webhook_lock_end;

    ngx_http_set_ctx(r, ctx, ngx_http_webhook_lock_module);

    /* the bot token in a Telegram URI is hashed before anything logs it */

    if (wlcf->rules.format == NGX_HTTP_WEBHOOK_LOCK_TELEGRAM
        && ngx_http_webhook_lock_telegram_inbox(r->pool, &r->uri,
                                                &ctx->payload.inbox)
           != NGX_OK)
    {
        ctx->state = NGX_HTTP_WEBHOOK_LOCK_STATE_DONE;
        ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return ngx_http_webhook_lock_respond(r, ctx);
    }

    if (ngx_http_webhook_lock_content_type(r, wlcf->rules.format) != NGX_OK) {
        ctx->state = NGX_HTTP_WEBHOOK_LOCK_STATE_DONE;
        ctx->status = NGX_HTTP_WEBHOOK_LOCK_INVALID;
        ctx->rc = NGX_HTTP_UNSUPPORTED_MEDIA_TYPE;
        return ngx_http_webhook_lock_respond(r, ctx);
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_webhook_lock_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    if (ctx->state == NGX_HTTP_WEBHOOK_LOCK_STATE_READING) {
        /* the body handler resumes the phases when the body is in */

        ctx->body_async = 1;

        ngx_http_finalize_request(r, NGX_DONE);
        return NGX_DONE;
    }

    /* the body was all there: the reference the reader took goes now */

    r->main->count--;

    if (ctx->state == NGX_HTTP_WEBHOOK_LOCK_STATE_LOCKING) {
        return NGX_DONE;
    }

    return ngx_http_webhook_lock_respond(r, ctx);
}


ngx_http_webhook_lock_ctx_t *
ngx_http_webhook_lock_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t           *cln;
    ngx_http_webhook_lock_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_webhook_lock_module);

    if (ctx || !(r->internal || r->filter_finalize)) {
        return ctx;
    }

    /* r->ctx was wiped by an internal redirect: find the ctx again */

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_webhook_lock_end) {
            ctx = cln->data;
            ctx->redirected = 1;

            ngx_http_set_ctx(r, ctx, ngx_http_webhook_lock_module);
            return ctx;
        }
    }

    return NULL;
}


static void
ngx_http_webhook_lock_body_handler(ngx_http_request_t *r)
{
    ngx_http_webhook_lock_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_webhook_lock_module);

    ngx_http_webhook_lock_inspect(r, ctx);

    if (!ctx->body_async
        || ctx->state != NGX_HTTP_WEBHOOK_LOCK_STATE_DONE)
    {
        return;
    }

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static void
ngx_http_webhook_lock_inspect(ngx_http_request_t *r,
    ngx_http_webhook_lock_ctx_t *ctx)
{
    ngx_int_t                          rc;
    ngx_str_t                          body, detail, inbox;
    ngx_http_webhook_lock_loc_conf_t  *wlcf;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_webhook_lock_module);

    ctx->state = NGX_HTTP_WEBHOOK_LOCK_STATE_DONE;

    rc = ngx_http_webhook_lock_body(r, &body);

    if (rc == NGX_ERROR) {
        ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    /* before anything is parsed or sent to Redis */

    if (wlcf->signature) {
        rc = ngx_http_webhook_lock_signature_check(r, wlcf->signature,
                                                   wlcf->signature_url,
                                                   wlcf->rules.format, &body);

        if (rc == NGX_ERROR) {
            ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return;
        }

        if (rc == NGX_DECLINED) {
            ctx->status = NGX_HTTP_WEBHOOK_LOCK_UNSIGNED;
            ctx->rc = NGX_HTTP_UNAUTHORIZED;
            return;
        }
    }

    ngx_str_null(&detail);

    inbox = ctx->payload.inbox;

    rc = ngx_http_webhook_lock_extract(r->pool, &wlcf->rules, body.data,
                                       body.len, &ctx->payload, &detail);

    if (ctx->payload.inbox.len == 0) {
        /* the body names none: Telegram's hashed URI, if any */
        ctx->payload.inbox = inbox;
    }

    if (rc == NGX_ERROR) {
        ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "webhook rejected: %V", &detail);

        ctx->status = NGX_HTTP_WEBHOOK_LOCK_INVALID;
        ctx->rc = NGX_HTTP_BAD_REQUEST;
        ctx->detail = detail;
        return;
    }

    rc = ngx_http_webhook_lock_keys(r, ctx);

    if (rc == NGX_ERROR) {
        ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    if (rc == NGX_DECLINED) {
        ctx->status = NGX_HTTP_WEBHOOK_LOCK_BYPASS;
        ctx->rc = NGX_DECLINED;
        return;
    }

    /*
     * A large body takes a while to parse, and nginx's clock is cached:
     * the Redis command's timer must count from now, not from before.
     */

    if (body.len > NGX_HTTP_WEBHOOK_LOCK_LARGE_BODY) {
        ngx_time_update();
    }

    ngx_http_webhook_lock_acquire(r, ctx);
}


static ngx_int_t
ngx_http_webhook_lock_content_type(ngx_http_request_t *r, ngx_uint_t format)
{
    u_char     *p, *last;
    ngx_str_t   type, want;

    if (r->headers_in.content_type == NULL) {
        return NGX_DECLINED;
    }

    type = r->headers_in.content_type->value;

    if (ngx_http_webhook_lock_format_is_form(format)) {
        ngx_str_set(&want, "application/x-www-form-urlencoded");

    } else {
        ngx_str_set(&want, "application/json");
    }

    /* the media type, case-insensitively, then nothing or parameters */

    if (type.len < want.len
        || ngx_strncasecmp(type.data, want.data, want.len) != 0)
    {
        return NGX_DECLINED;
    }

    p = type.data + want.len;
    last = type.data + type.len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (p == last || *p == ';') {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * The body in one piece: the buffer nginx read it into when it fits
 * client_body_buffer_size, else a copy from the buffers or temp file.
 */

static ngx_int_t
ngx_http_webhook_lock_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    size_t        len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ngx_str_null(body);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;
    b = cl->buf;

    if (cl->next == NULL && !b->in_file) {
        body->data = b->pos;
        body->len = b->last - b->pos;
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {

            /* the last buffer of a chunked body may be empty: pos NULL */

            if (b->last != b->pos) {
                p = ngx_cpymem(p, b->pos, b->last - b->pos);
            }

            continue;
        }

        n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                          b->file_pos);

        if (n != b->file_last - b->file_pos) {
            ngx_log_error(NGX_LOG_CRIT, r->connection->log, ngx_errno,
                          ngx_read_file_n " \"%V\" returned only %z bytes",
                          &b->file->name, n);
            return NGX_ERROR;
        }

        p += n;
    }

    body->len = p - body->data;
    *p = '\0';

    return NGX_OK;
}


/*
 * One key per sender, from the key template.  NGX_DECLINED: no key at all
 * (no sender, or every key came out empty), so no lock.
 */

static ngx_int_t
ngx_http_webhook_lock_keys(ngx_http_request_t *r,
    ngx_http_webhook_lock_ctx_t *ctx)
{
    ngx_str_t                         *sender, *key;
    ngx_uint_t                         i;
    ngx_http_webhook_lock_loc_conf_t  *wlcf;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_webhook_lock_module);

    if (ctx->payload.senders.nelts == 0) {
        return NGX_DECLINED;
    }

    if (ngx_array_init(&ctx->keys, r->pool, ctx->payload.senders.nelts,
                       sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    sender = ctx->payload.senders.elts;

    for (i = 0; i < ctx->payload.senders.nelts; i++) {
        key = ngx_array_push(&ctx->keys);
        if (key == NULL) {
            return NGX_ERROR;
        }

        ctx->sender = &sender[i];

        if (ngx_http_complex_value(r, wlcf->key, key) != NGX_OK) {
            ctx->sender = NULL;
            return NGX_ERROR;
        }

        if (key->len == 0) {
            ctx->keys.nelts--;
            continue;
        }

        if (key->len > NGX_HTTP_WEBHOOK_LOCK_KEY_MAX) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "webhook lock key of %uz bytes is too long, "
                          "sender \"%V\" not locked", key->len, &sender[i]);
            ctx->keys.nelts--;
            continue;
        }
    }

    ctx->sender = NULL;

    return ctx->keys.nelts ? NGX_OK : NGX_DECLINED;
}


static void
ngx_http_webhook_lock_acquire(ngx_http_request_t *r,
    ngx_http_webhook_lock_ctx_t *ctx)
{
    ngx_int_t                          rc;
    ngx_http_cleanup_t                *cln;
    ngx_http_webhook_lock_handle_t    *lk;
    ngx_http_webhook_lock_loc_conf_t  *wlcf;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_webhook_lock_module);

    lk = &ctx->lock;

    lk->keys = ctx->keys.elts;
    lk->nkeys = ctx->keys.nelts;
    lk->ids = ctx->payload.message_ids.elts;
    lk->nids = ctx->payload.message_ids.nelts;
    lk->inbox = ctx->payload.inbox.len ? ctx->payload.inbox : r->uri;
    lk->ttl = wlcf->ttl;
    lk->hold = wlcf->hold;
    lk->dedup = wlcf->dedup;
    lk->wait = wlcf->wait;
    lk->queue = wlcf->queue;
    lk->pool = r->pool;
    lk->log = r->connection->log;
    lk->handler = ngx_http_webhook_lock_acquire_handler;
    lk->data = r;

    rc = ngx_http_webhook_lock_take(lk);

    if (rc == NGX_ERROR) {
        ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_webhook_lock_decide(r, ctx, NGX_ERROR);
        return;
    }

    /* terminate_request frees the pool whatever count says: detach then */

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        ngx_http_webhook_lock_cancel(lk);
        ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    cln->handler = ngx_http_webhook_lock_cleanup;
    cln->data = ctx;

    ctx->state = NGX_HTTP_WEBHOOK_LOCK_STATE_LOCKING;
    ctx->waiting = 1;

    ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_WAITING, 1);

    r->main->count++;

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;
}


/* a posted event: the lock's answer came */

static void
ngx_http_webhook_lock_acquire_handler(ngx_http_webhook_lock_handle_t *lk)
{
    ngx_http_request_t  *r = lk->data;

    ngx_connection_t             *c;
    ngx_http_webhook_lock_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_webhook_lock_module);

    /* Redis's own time; with a wait, the rest was the wait */

    ctx->redis_time = lk->round_trip;
    ctx->redis_timed = 1;
    ctx->waiting = 0;

    ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_WAITING, -1);

    ngx_http_set_log_request(c->log, r);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "webhook lock reply: %i", lk->rc);

    ngx_http_webhook_lock_decide(r, ctx, lk->rc);

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);

    ngx_http_finalize_request(r, NGX_DONE);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_webhook_lock_decide(ngx_http_request_t *r,
    ngx_http_webhook_lock_ctx_t *ctx, ngx_int_t rc)
{
    ngx_str_t                         *key;
    ngx_msec_t                         elapsed;
    ngx_http_webhook_lock_loc_conf_t  *wlcf;

    static time_t                      logged[2];

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_webhook_lock_module);

    ctx->state = NGX_HTTP_WEBHOOK_LOCK_STATE_DONE;

    elapsed = ngx_current_msec - ctx->lock.start;

    if (!ctx->redis_timed) {
        ctx->redis_time = elapsed;
        ctx->redis_timed = 1;
    }

    ngx_http_webhook_lock_stat_observe(NGX_HTTP_WEBHOOK_LOCK_HIST_REDIS,
                                       ctx->redis_time);

    key = ctx->keys.elts;

    switch (rc) {

    case NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN:
    case NGX_HTTP_WEBHOOK_LOCK_REDIS_WAITED:
        ctx->rc = NGX_DECLINED;

        if (rc == NGX_HTTP_WEBHOOK_LOCK_REDIS_TAKEN) {
            ctx->status = NGX_HTTP_WEBHOOK_LOCK_ACQUIRED;

        } else {
            ctx->status = NGX_HTTP_WEBHOOK_LOCK_WAITED;
            ctx->wait_time = elapsed;
        }

        ngx_http_webhook_lock_stat_observe(NGX_HTTP_WEBHOOK_LOCK_HIST_WAIT,
                                           ctx->wait_time);
        return;

    case NGX_HTTP_WEBHOOK_LOCK_REDIS_DUPLICATE:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "webhook duplicate, every message id done, "
                      "key \"%V\"", &key[0]);

        ctx->status = NGX_HTTP_WEBHOOK_LOCK_DUPLICATE;
        ctx->rc = NGX_HTTP_OK;
        return;

    case NGX_HTTP_WEBHOOK_LOCK_REDIS_PROCESSING:
        ngx_log_error(wlcf->log_level, r->connection->log, 0,
                      "webhook duplicate in progress, key \"%V\"",
                      &key[0]);

        ctx->status = NGX_HTTP_WEBHOOK_LOCK_BUSY;
        ctx->in_progress = 1;
        ctx->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        return;

    case NGX_HTTP_WEBHOOK_LOCK_REDIS_BUSY:
    case NGX_HTTP_WEBHOOK_LOCK_REDIS_FULL:
        if (rc == NGX_HTTP_WEBHOOK_LOCK_REDIS_FULL) {
            ngx_log_error(wlcf->log_level, r->connection->log, 0,
                          "webhook sender busy, %i waiting already, "
                          "key \"%V\"", wlcf->queue, &key[0]);

        } else if (wlcf->wait) {
            ctx->wait_time = elapsed;

            ngx_log_error(wlcf->log_level, r->connection->log, 0,
                          "webhook sender busy, waited %Mms, key \"%V\"",
                          ctx->wait_time, &key[0]);

        } else {
            ngx_log_error(wlcf->log_level, r->connection->log, 0,
                          "webhook sender busy, key \"%V\"", &key[0]);
        }

        ctx->status = NGX_HTTP_WEBHOOK_LOCK_BUSY;
        ctx->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        return;

    default:
        break;
    }

    /* rc == NGX_ERROR: Redis is down, slow, or answered an error */

    if (wlcf->fail_open) {

        /* once a second at most: an outage must not flood the log */

        if (logged[1] != ngx_time()) {
            logged[1] = ngx_time();
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "webhook lock unavailable, forwarded unlocked, "
                          "key \"%V\"", &key[0]);
        }

        ctx->status = NGX_HTTP_WEBHOOK_LOCK_OPEN;
        ctx->rc = NGX_DECLINED;
        return;
    }

    if (logged[0] != ngx_time()) {
        logged[0] = ngx_time();
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "webhook lock unavailable, key \"%V\"", &key[0]);
    }

    ctx->status = NGX_HTTP_WEBHOOK_LOCK_ERROR;
    ctx->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
}


/*
 * Acts on the decision: NGX_DECLINED lets the next handler, proxy_pass,
 * forward the request; anything else is a response of the module's own.
 */

static ngx_int_t
ngx_http_webhook_lock_respond(ngx_http_request_t *r,
    ngx_http_webhook_lock_ctx_t *ctx)
{
    u_char                            *p;
    size_t                             len;
    ngx_int_t                          rc;
    ngx_str_t                          body, error;
    ngx_http_webhook_lock_loc_conf_t  *wlcf;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_webhook_lock_module);

    if (!ctx->counted) {
        ctx->counted = 1;
        ngx_http_webhook_lock_stat_request(wlcf->stat, ctx->status);
    }

    if (ctx->rc == NGX_DECLINED || ctx->rc == NGX_HTTP_INTERNAL_SERVER_ERROR)
    {
        return ctx->rc;
    }

    switch (ctx->status) {

    case NGX_HTTP_WEBHOOK_LOCK_BUSY:
    case NGX_HTTP_WEBHOOK_LOCK_ERROR:

        if (ctx->in_progress) {
            ngx_str_set(&error, "duplicate_in_progress");

        } else if (ctx->status == NGX_HTTP_WEBHOOK_LOCK_BUSY) {
            ngx_str_set(&error, "sender_busy");

        } else {
            ngx_str_set(&error, "lock_unavailable");
        }

        len = sizeof("{\"error\":\"\",\"retry_after\":}") - 1 + error.len
              + NGX_TIME_T_LEN;

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        body.data = p;
        body.len = ngx_sprintf(p, "{\"error\":\"%V\",\"retry_after\":%T}",
                               &error, wlcf->retry_after)
                   - p;

        rc = ngx_http_webhook_lock_send(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        &body, wlcf->retry_after);
        break;

    case NGX_HTTP_WEBHOOK_LOCK_UNSIGNED:

        ngx_str_set(&body, "{\"error\":\"invalid_signature\"}");

        rc = ngx_http_webhook_lock_send(r, NGX_HTTP_UNAUTHORIZED, &body, 0);
        break;

    case NGX_HTTP_WEBHOOK_LOCK_DUPLICATE:

        ngx_str_set(&body, "{\"status\":\"duplicate\"}");

        rc = ngx_http_webhook_lock_send(r, NGX_HTTP_OK, &body, 0);
        break;

    default: /* NGX_HTTP_WEBHOOK_LOCK_INVALID */

        if (ctx->rc == NGX_HTTP_UNSUPPORTED_MEDIA_TYPE) {
            ngx_str_set(&body, "{\"error\":\"unsupported_media_type\"}");

        } else {
            len = sizeof("{\"error\":\"invalid_payload\",\"detail\":\"\"}")
                  - 1 + ngx_escape_json(NULL, ctx->detail.data,
                                        ctx->detail.len)
                  + ctx->detail.len;

            p = ngx_pnalloc(r->pool, len);
            if (p == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            body.data = p;

            p = ngx_cpymem(p, "{\"error\":\"invalid_payload\",\"detail\":\"",
                           sizeof("{\"error\":\"invalid_payload\","
                                  "\"detail\":\"") - 1);
            p = (u_char *) ngx_escape_json(p, ctx->detail.data,
                                           ctx->detail.len);
            p = ngx_cpymem(p, "\"}", 2);

            body.len = p - body.data;
        }

        rc = ngx_http_webhook_lock_send(r, ctx->rc, &body, 0);
        break;
    }

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_webhook_lock_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body, time_t retry_after)
{
    u_char           *p;
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = body->len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (retry_after) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        ngx_str_set(&h->key, "Retry-After");
        h->value.data = p;
        h->value.len = ngx_sprintf(p, "%T", retry_after) - p;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


/*
 * r->cleanup: the request is going away while Redis has not answered,
 * or while it waits for its turn
 */

static void
ngx_http_webhook_lock_cleanup(void *data)
{
    ngx_http_webhook_lock_ctx_t  *ctx = data;

    ngx_http_webhook_lock_cancel(&ctx->lock);

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_http_webhook_lock_stat_add(NGX_HTTP_WEBHOOK_LOCK_STAT_WAITING, -1);
    }
}


/*
 * The request's pool goes: whatever ended the request (a response, an
 * upstream error, a client abort, error_page), the lock is given back,
 * or kept for what is left of webhook_lock_hold.  The dedup marks become
 * "done" if the client got a 2xx, as $status shows it, and are dropped
 * otherwise, so that the redelivery of a failed message gets through.
 * A request that ended while the app was still at work on it (the
 * client gone, 504, 502 after the request was sent) leaves the lock and
 * the marks to expire: the provider's redelivery must not walk in
 * beside it.
 */

static void
ngx_http_webhook_lock_end(void *data)
{
    ngx_http_webhook_lock_ctx_t  *ctx = data;

    ngx_uint_t                    status;
    ngx_http_request_t           *r;
    ngx_http_webhook_lock_end_e   end;

    ngx_http_webhook_lock_cancel(&ctx->lock);

    if (!ctx->lock.held) {
        return;
    }

    r = ctx->request;

    status = r->err_status ? r->err_status : r->headers_out.status;

    if (!ngx_http_webhook_lock_answered(r)) {
        end = NGX_HTTP_WEBHOOK_LOCK_END_LEFT;

    } else if (status >= 200 && status < 300) {
        end = NGX_HTTP_WEBHOOK_LOCK_END_DONE;

    } else {
        end = NGX_HTTP_WEBHOOK_LOCK_END_FAILED;
    }

    ngx_http_webhook_lock_release(&ctx->lock, end);
}


/*
 * Whether the app is done with the request: no upstream was sent a byte
 * of it without answering (a header) afterwards.  After a 504, a 499 or
 * a 502 that came once the request was sent, the app may still be at
 * work; after a refused connect or a complete answer it is not.
 */

static ngx_uint_t
ngx_http_webhook_lock_answered(ngx_http_request_t *r)
{
    ngx_uint_t                  i;
    ngx_http_upstream_state_t  *state;

    if (r->upstream_states == NULL) {
        return 1;
    }

    state = r->upstream_states->elts;

    for (i = 0; i < r->upstream_states->nelts; i++) {
        if (state[i].peer != NULL
            && state[i].bytes_sent > 0
            && state[i].header_time == (ngx_msec_t) -1)
        {
            return 0;
        }
    }

    return 1;
}
