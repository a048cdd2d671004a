
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_FORMATS_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_FORMATS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_webhook_lock_payload.h"


#define NGX_HTTP_WEBHOOK_LOCK_OFF        0
#define NGX_HTTP_WEBHOOK_LOCK_WHATSAPP   1
#define NGX_HTTP_WEBHOOK_LOCK_INSTAGRAM  2
#define NGX_HTTP_WEBHOOK_LOCK_MESSENGER  3
#define NGX_HTTP_WEBHOOK_LOCK_TIKTOK     4
#define NGX_HTTP_WEBHOOK_LOCK_TWILIO     5
#define NGX_HTTP_WEBHOOK_LOCK_JSON       6
#define NGX_HTTP_WEBHOOK_LOCK_TELEGRAM   7
#define NGX_HTTP_WEBHOOK_LOCK_LINE       8
#define NGX_HTTP_WEBHOOK_LOCK_SMS        9

/* longest sender, inbox or message id accepted from a body */
#define NGX_HTTP_WEBHOOK_LOCK_VALUE_MAX  256

/* most distinct senders and message ids in one body */
#define NGX_HTTP_WEBHOOK_LOCK_SENDERS_MAX  100
#define NGX_HTTP_WEBHOOK_LOCK_IDS_MAX      1000


extern ngx_conf_enum_t  ngx_http_webhook_lock_formats[];


/*
 * Extracts the inbox, senders and message ids of a body by the rules of
 * its format.  Returns NGX_OK (no sender means the body bypasses the
 * lock), NGX_DECLINED with a short reason in "detail" when the body is
 * not a valid webhook of that format, or NGX_ERROR when out of memory.
 * Everything returned is allocated from "pool"; "body" is not modified.
 */
ngx_int_t ngx_http_webhook_lock_extract(ngx_pool_t *pool,
    ngx_http_webhook_lock_rules_t *rules, u_char *body, size_t len,
    ngx_http_webhook_lock_payload_t *pl, ngx_str_t *detail);

/* 1 for formats posted as application/x-www-form-urlencoded */
ngx_uint_t ngx_http_webhook_lock_format_is_form(ngx_uint_t format);

/*
 * The inbox of a Telegram body, which names none: the URI with its last
 * segment, the bot token, replaced by "sha256-" and the first 128 bits
 * of that segment's SHA-256 in hex, so that the token goes into no key
 * and no log line.  Allocated from "pool".
 */
ngx_int_t ngx_http_webhook_lock_telegram_inbox(ngx_pool_t *pool,
    ngx_str_t *uri, ngx_str_t *inbox);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_FORMATS_H_INCLUDED_ */
