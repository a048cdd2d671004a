
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_webhook_lock_module.h"


static ngx_int_t ngx_http_webhook_lock_sender_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_webhook_lock_list_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_webhook_lock_first_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_webhook_lock_inbox_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_webhook_lock_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_webhook_lock_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_webhook_lock_join(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, ngx_array_t *a);


static ngx_http_variable_t  ngx_http_webhook_lock_vars[] = {

    { ngx_string("webhook_sender"), NULL,
      ngx_http_webhook_lock_sender_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("webhook_senders"), NULL,
      ngx_http_webhook_lock_list_variable,
      offsetof(ngx_http_webhook_lock_ctx_t, payload.senders),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("webhook_message_id"), NULL,
      ngx_http_webhook_lock_first_variable,
      offsetof(ngx_http_webhook_lock_ctx_t, payload.message_ids),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("webhook_message_ids"), NULL,
      ngx_http_webhook_lock_list_variable,
      offsetof(ngx_http_webhook_lock_ctx_t, payload.message_ids),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("webhook_inbox"), NULL,
      ngx_http_webhook_lock_inbox_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("webhook_lock_key"), NULL,
      ngx_http_webhook_lock_list_variable,
      offsetof(ngx_http_webhook_lock_ctx_t, keys),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("webhook_lock_status"), NULL,
      ngx_http_webhook_lock_status_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("webhook_lock_wait_time"), NULL,
      ngx_http_webhook_lock_time_variable,
      offsetof(ngx_http_webhook_lock_ctx_t, wait_time),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("webhook_redis_time"), NULL,
      ngx_http_webhook_lock_time_variable,
      offsetof(ngx_http_webhook_lock_ctx_t, redis_time),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_webhook_lock_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_webhook_lock_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* the sender being keyed while the key template runs, else the first */

static ngx_int_t
ngx_http_webhook_lock_sender_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                    *sender;
    ngx_http_webhook_lock_ctx_t  *ctx;

    ctx = ngx_http_webhook_lock_get_ctx(r->main);

    if (ctx == NULL || ctx->payload.senders.nelts == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    sender = ctx->sender ? ctx->sender : ctx->payload.senders.elts;

    v->len = sender->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = sender->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_webhook_lock_list_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_webhook_lock_ctx_t  *ctx;

    ctx = ngx_http_webhook_lock_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_webhook_lock_join(r, v,
                                      (ngx_array_t *) ((char *) ctx + data));
}


static ngx_int_t
ngx_http_webhook_lock_first_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                    *s;
    ngx_array_t                  *a;
    ngx_http_webhook_lock_ctx_t  *ctx;

    ctx = ngx_http_webhook_lock_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    a = (ngx_array_t *) ((char *) ctx + data);

    if (a->nelts == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = a->elts;

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}


/* the payload's inbox; a body that names none is known by its URI */

static ngx_int_t
ngx_http_webhook_lock_inbox_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                    *inbox;
    ngx_http_webhook_lock_ctx_t  *ctx;

    ctx = ngx_http_webhook_lock_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    inbox = ctx->payload.inbox.len ? &ctx->payload.inbox : &r->main->uri;

    v->len = inbox->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = inbox->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_webhook_lock_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_webhook_lock_ctx_t  *ctx;

    ctx = ngx_http_webhook_lock_get_ctx(r->main);

    if (ctx == NULL || ctx->status == NGX_HTTP_WEBHOOK_LOCK_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ngx_http_webhook_lock_status_names[ctx->status].len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = ngx_http_webhook_lock_status_names[ctx->status].data;

    return NGX_OK;
}


/* seconds with millisecond resolution, as $request_time */

static ngx_int_t
ngx_http_webhook_lock_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                       *p;
    ngx_msec_t                    ms;
    ngx_http_webhook_lock_ctx_t  *ctx;

    ctx = ngx_http_webhook_lock_get_ctx(r->main);

    if (ctx == NULL || !ctx->redis_timed) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ms = *(ngx_msec_t *) ((char *) ctx + data);

    v->len = ngx_sprintf(p, "%T.%03M", (time_t) ms / 1000, ms % 1000) - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}


/* several values, comma-joined */

static ngx_int_t
ngx_http_webhook_lock_join(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, ngx_array_t *a)
{
    u_char      *p;
    size_t       len;
    ngx_str_t   *s;
    ngx_uint_t   i;

    if (a->nelts == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = a->elts;

    if (a->nelts == 1) {
        v->len = s[0].len;
        v->data = s[0].data;

    } else {
        len = a->nelts - 1;

        for (i = 0; i < a->nelts; i++) {
            len += s[i].len;
        }

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;

        for (i = 0; i < a->nelts; i++) {
            if (i) {
                *p++ = ',';
            }

            p = ngx_cpymem(p, s[i].data, s[i].len);
        }

        v->len = len;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}
