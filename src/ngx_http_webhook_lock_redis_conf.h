
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_REDIS_CONF_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_REDIS_CONF_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>


/* where a Redis (or a sentinel) listens */

typedef struct {
    ngx_str_t           name;             /* host[:port] as written, for
                                             logs and the resolver */
    ngx_str_t           host;             /* IP text or unix path, with a
                                             NUL after it; a name until
                                             resolved when "resolve" */
    in_port_t           port;             /* 0: unix socket */
    unsigned            resolve:1;        /* a name, resolved at run time */
} ngx_http_webhook_lock_redis_addr_t;


typedef struct {
    ngx_str_t           name;             /* for logs: never a password */
    ngx_http_webhook_lock_redis_addr_t  server;  /* the master name with
                                             sentinels */
    ngx_str_t           user;             /* len == 0: AUTH password only */
    ngx_str_t           password;         /* len == 0: no AUTH */
    ngx_int_t           db;
    ngx_msec_t          connect_timeout;
    ngx_msec_t          timeout;
    ngx_uint_t          max_pending;

    ngx_array_t        *sentinels;        /* ngx_http_webhook_lock_redis_
                                             addr_t; NULL: no Sentinel */
    ngx_str_t           sentinel_password;

    ngx_resolver_t     *resolver;         /* NULL: names resolved when
                                             the configuration is read */
    ngx_msec_t          resolver_timeout;

    ngx_flag_t          tls;              /* rediss:// */
    ngx_flag_t          tls_verify;
    ngx_str_t           tls_ca;           /* len == 0: the system's */
    ngx_str_t           tls_name;         /* len == 0: the URL's host */
    ngx_str_t           tls_cert;
    ngx_str_t           tls_key;
#if (NGX_SSL)
    ngx_ssl_t          *ssl;
#endif

    ngx_flag_t          dedup;            /* load the dedup scripts */
    ngx_flag_t          queue;            /* some location waits: the
                                             queue script, a subscriber */

    u_char             *file;             /* where webhook_redis is, for */
    ngx_uint_t          line;             /* errors found later */
} ngx_http_webhook_lock_redis_conf_t;


char *ngx_http_webhook_lock_redis_conf_parse(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf);
void ngx_http_webhook_lock_redis_conf_create(
    ngx_http_webhook_lock_redis_conf_t *rcf);
char *ngx_http_webhook_lock_redis_conf_init(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_REDIS_CONF_H_INCLUDED_ */
