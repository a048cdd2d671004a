
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_PAYLOAD_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_PAYLOAD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <cjson/cJSON.h>

#include "ngx_http_webhook_lock_formats.h"


/*
 * PATH: dot-separated names, "[N]" for an index, "[*]" for every element,
 * a leading "[*]" or "[N]" for a top-level array:
 * "entry[*].changes[*].value.messages[*].from", "[*].message.from".
 * Returns NGX_CONF_OK or a message for ngx_conf_log_error().
 */
char *ngx_http_webhook_lock_path_compile(ngx_conf_t *cf, ngx_str_t *text,
    ngx_http_webhook_lock_path_t **path);

/*
 * Parses a whole body as JSON: strict UTF-8, no NUL bytes, nothing but
 * white space after the value, bounded nesting.  NULL with "detail" set
 * when it is not valid.  The tree is freed by the pool's cleanup.
 */
cJSON *ngx_http_webhook_lock_json_parse(ngx_pool_t *pool, u_char *body,
    size_t len, ngx_str_t *detail);

/*
 * Appends to "out" (ngx_str_t) every string or number the path reaches.
 * NGX_DECLINED with "detail" when a value is too long, NGX_ERROR on
 * memory.
 */
ngx_int_t ngx_http_webhook_lock_path_collect(ngx_pool_t *pool,
    ngx_http_webhook_lock_path_t *path, cJSON *root, ngx_array_t *out,
    ngx_str_t *detail);

/*
 * application/x-www-form-urlencoded: fills "fields" (ngx_keyval_t,
 * percent- and plus-decoded, in body order).  NGX_DECLINED with "detail"
 * on a malformed body.
 */
ngx_int_t ngx_http_webhook_lock_form_parse(ngx_pool_t *pool, u_char *body,
    size_t len, ngx_array_t *fields, ngx_str_t *detail);

/* the first field of that name, or NULL */
ngx_str_t *ngx_http_webhook_lock_form_get(ngx_array_t *fields,
    const char *name);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_PAYLOAD_H_INCLUDED_ */
