
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_MODULE_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_webhook_lock_formats.h"
#include "ngx_http_webhook_lock_redis.h"
#include "ngx_http_webhook_lock_status.h"


typedef struct {
    ngx_http_webhook_lock_redis_conf_t   redis;
    ngx_flag_t                           enabled;   /* some location locks */
} ngx_http_webhook_lock_main_conf_t;


typedef struct {
    ngx_http_webhook_lock_rules_t        rules;
    ngx_http_complex_value_t            *key;
    ngx_array_t                         *signature; /* secrets, or NULL */
    ngx_http_complex_value_t            *signature_url;
    ngx_msec_t                           ttl;
    ngx_msec_t                           hold;
    ngx_msec_t                           dedup;     /* 0: off */
    ngx_msec_t                           wait;
    ngx_int_t                            queue;     /* most waiting */
    time_t                               retry_after;
    ngx_uint_t                           fail_open;
    ngx_uint_t                           log_level;
    ngx_str_t                            name;      /* in webhook_status */
    ngx_http_webhook_lock_stat_slot_t   *stat;
} ngx_http_webhook_lock_loc_conf_t;


typedef enum {
    NGX_HTTP_WEBHOOK_LOCK_STATE_READING = 0,
    NGX_HTTP_WEBHOOK_LOCK_STATE_LOCKING,
    NGX_HTTP_WEBHOOK_LOCK_STATE_DONE
} ngx_http_webhook_lock_state_e;


/*
 * Lives in the main request's pool.  A pool cleanup, not r->cleanup,
 * releases the lock, so internal redirects and error_page, which wipe
 * the module ctx, do not lose it: the cleanup holds its own pointer.
 */
typedef struct {
    ngx_http_request_t                  *request;
    ngx_http_webhook_lock_state_e        state;
    ngx_http_webhook_lock_status_e       status;
    ngx_int_t                            rc;        /* decision to return */

    ngx_http_webhook_lock_payload_t      payload;
    ngx_str_t                            detail;    /* why it is invalid */
    ngx_str_t                           *sender;    /* keyed now, or NULL */
    ngx_array_t                          keys;      /* of ngx_str_t */
    ngx_http_webhook_lock_handle_t       lock;

    ngx_msec_t                           redis_time;
    ngx_msec_t                           wait_time;

    unsigned                             redis_timed:1;
    unsigned                             body_async:1;
    unsigned                             redirected:1;
    unsigned                             in_progress:1; /* dedup busy */
    unsigned                             counted:1;
    unsigned                             waiting:1;
} ngx_http_webhook_lock_ctx_t;


extern ngx_module_t  ngx_http_webhook_lock_module;


ngx_int_t ngx_http_webhook_lock_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_webhook_lock_add_variables(ngx_conf_t *cf);
ngx_http_webhook_lock_ctx_t *ngx_http_webhook_lock_get_ctx(
    ngx_http_request_t *r);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_MODULE_H_INCLUDED_ */
