
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_REDIS_CONN_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_REDIS_CONN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/async.h>

#include "ngx_http_webhook_lock_redis_conf.h"


typedef enum {
    NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN = 0,      /* no context */
    NGX_HTTP_WEBHOOK_LOCK_REDIS_CONNECTING,
    NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP,         /* AUTH, SELECT... sent */
    NGX_HTTP_WEBHOOK_LOCK_REDIS_READY,
    NGX_HTTP_WEBHOOK_LOCK_REDIS_DROPPING       /* freed by a posted event */
} ngx_http_webhook_lock_redis_state_e;


typedef struct ngx_http_webhook_lock_conn_s  ngx_http_webhook_lock_conn_t;

typedef void (*ngx_http_webhook_lock_conn_pt)(
    ngx_http_webhook_lock_conn_t *cn);


/*
 * A connection to Redis and its life: connect, setup commands (whose
 * replies make it ready), reconnect with backoff.  It knows its conf and
 * its owner's handlers, nothing else.  ac->data points back here.
 */

struct ngx_http_webhook_lock_conn_s {
    redisAsyncContext                   *ac;
    ngx_http_webhook_lock_redis_conf_t  *conf;
    ngx_http_webhook_lock_redis_addr_t  *addr;      /* &conf->server */
    ngx_resolver_ctx_t                  *resolving;
    in_port_t                            port;      /* being resolved */
    u_char                               host[NGX_SOCKADDR_STRLEN];
    void                                *data;      /* the owner */
    ngx_http_webhook_lock_redis_state_e  state;
    const char                          *role;      /* in log lines */
    ngx_uint_t                           setup;     /* replies still due */
    ngx_msec_t                           backoff;
    ngx_event_t                          connect;   /* connect_timeout */
    ngx_event_t                          reconnect;
    ngx_event_t                          drop;      /* posted */
    ngx_http_webhook_lock_conn_pt        locate;    /* NULL, or finds
                                                       the address first,
                                                       then calls
                                                       conn_connect_addr */
    void                                *locator;   /* Sentinel: ROLE is
                                                       checked at setup */
    ngx_http_webhook_lock_conn_pt        init;      /* sends the setup */
    ngx_http_webhook_lock_conn_pt        ready_handler;
    ngx_http_webhook_lock_conn_pt        lost_handler;
    ngx_http_webhook_lock_conn_pt        shutdown_handler; /* forced */
    unsigned                             down:1;    /* "unreachable" said */
    unsigned                             locating:1;
    unsigned                             exiting:1;
};


void ngx_http_webhook_lock_conn_init(ngx_http_webhook_lock_conn_t *cn,
    ngx_http_webhook_lock_redis_conf_t *conf, ngx_log_t *log,
    const char *role, void *data);
void ngx_http_webhook_lock_conn_connect(ngx_http_webhook_lock_conn_t *cn);

/* from cn->locate: connect there, resolving the name first if need be */
void ngx_http_webhook_lock_conn_connect_addr(ngx_http_webhook_lock_conn_t *cn,
    ngx_http_webhook_lock_redis_addr_t *addr);

/* in cn->init: AUTH (with a password), then SELECT (with a db) if asked */
ngx_int_t ngx_http_webhook_lock_conn_login(ngx_http_webhook_lock_conn_t *cn,
    ngx_uint_t select);

/*
 * A setup command: the connection is ready once every one has answered,
 * each reply handler calling ngx_http_webhook_lock_conn_setup_done().
 */
ngx_int_t ngx_http_webhook_lock_conn_setup(ngx_http_webhook_lock_conn_t *cn,
    redisCallbackFn *fn, void *privdata, int argc, const char **argv,
    const size_t *argvlen);
void ngx_http_webhook_lock_conn_setup_done(ngx_http_webhook_lock_conn_t *cn);

/* from inside a hiredis callback: freed by a posted event */
void ngx_http_webhook_lock_conn_fail(ngx_http_webhook_lock_conn_t *cn,
    const char *reason);

/* outside hiredis callbacks: freed now, then a reconnect */
void ngx_http_webhook_lock_conn_drop(ngx_http_webhook_lock_conn_t *cn,
    const char *reason);

/* outside hiredis callbacks: freed now, connected again at once */
void ngx_http_webhook_lock_conn_restart(ngx_http_webhook_lock_conn_t *cn);

/* the worker exits: freed now, no reconnect */
void ngx_http_webhook_lock_conn_exit(ngx_http_webhook_lock_conn_t *cn);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_REDIS_CONN_H_INCLUDED_ */
