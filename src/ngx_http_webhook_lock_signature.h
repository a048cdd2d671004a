
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_SIGNATURE_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_SIGNATURE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_WEBHOOK_LOCK_SIGNATURE_URL  "$scheme://$host$request_uri"


/*
 * Verifies the provider signature of a whole body by the scheme of its
 * format, with each of "secrets" (ngx_http_complex_value_t) in turn;
 * secrets that come out empty are skipped.  "url" is what Twilio signed.
 * Returns NGX_OK when one secret matches, NGX_DECLINED when the header
 * is missing, malformed or matches none (logged at info, without the
 * secrets or the expected value), NGX_ERROR when out of memory, when
 * OpenSSL fails, or when every secret came out empty (logged).
 */
ngx_int_t ngx_http_webhook_lock_signature_check(ngx_http_request_t *r,
    ngx_array_t *secrets, ngx_http_complex_value_t *url, ngx_uint_t format,
    ngx_str_t *body);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_SIGNATURE_H_INCLUDED_ */
