
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_STATUS_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_STATUS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* what the gate decided for a request: $webhook_lock_status */

typedef enum {
    NGX_HTTP_WEBHOOK_LOCK_NONE = 0,
    NGX_HTTP_WEBHOOK_LOCK_ACQUIRED,
    NGX_HTTP_WEBHOOK_LOCK_WAITED,
    NGX_HTTP_WEBHOOK_LOCK_BUSY,
    NGX_HTTP_WEBHOOK_LOCK_BYPASS,
    NGX_HTTP_WEBHOOK_LOCK_DUPLICATE,
    NGX_HTTP_WEBHOOK_LOCK_INVALID,
    NGX_HTTP_WEBHOOK_LOCK_UNSIGNED,
    NGX_HTTP_WEBHOOK_LOCK_ERROR,
    NGX_HTTP_WEBHOOK_LOCK_OPEN
} ngx_http_webhook_lock_status_e;


/* counters and gauges shared by every worker */

typedef enum {
    NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_COMMANDS = 0,
    NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_ERRORS,
    NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_TIMEOUTS,
    NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_RECONNECTS,
    NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_CONNECTED,     /* gauge: workers */
    NGX_HTTP_WEBHOOK_LOCK_STAT_LOCKS_HELD,          /* gauge */
    NGX_HTTP_WEBHOOK_LOCK_STAT_WAITING,             /* gauge */
    NGX_HTTP_WEBHOOK_LOCK_STAT_LOCKS_LEFT,          /* left to expire */
    NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_MASTER_SWITCHES,
    NGX_HTTP_WEBHOOK_LOCK_STAT_N
} ngx_http_webhook_lock_stat_e;


typedef enum {
    NGX_HTTP_WEBHOOK_LOCK_HIST_REDIS = 0,           /* lock round trip */
    NGX_HTTP_WEBHOOK_LOCK_HIST_WAIT,                /* waited for a lock */
    NGX_HTTP_WEBHOOK_LOCK_HIST_N
} ngx_http_webhook_lock_hist_e;


typedef struct ngx_http_webhook_lock_stat_slot_s
    ngx_http_webhook_lock_stat_slot_t;


/* the names of ngx_http_webhook_lock_status_e */
extern ngx_str_t  ngx_http_webhook_lock_status_names[];


/* at configuration: the zone, and one slot per location name */
ngx_int_t ngx_http_webhook_lock_stat_zone(ngx_conf_t *cf);
ngx_int_t ngx_http_webhook_lock_stat_location(ngx_conf_t *cf,
    ngx_str_t *name, ngx_http_webhook_lock_stat_slot_t **slot);

/* at run time: cheap, lock-free, and no-ops without a zone */
void ngx_http_webhook_lock_stat_add(ngx_uint_t stat, ngx_atomic_int_t n);
void ngx_http_webhook_lock_stat_request(
    ngx_http_webhook_lock_stat_slot_t *slot, ngx_uint_t status);
void ngx_http_webhook_lock_stat_observe(ngx_uint_t hist, ngx_msec_t ms);

/* the webhook_status directive */
char *ngx_http_webhook_lock_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_STATUS_H_INCLUDED_ */
