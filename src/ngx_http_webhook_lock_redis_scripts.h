
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_REDIS_SCRIPTS_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_REDIS_SCRIPTS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>

#include "ngx_http_webhook_lock_redis_conn.h"


typedef enum {
    NGX_HTTP_WEBHOOK_LOCK_CMD_SET = 0,         /* acquire, one key */
    NGX_HTTP_WEBHOOK_LOCK_CMD_ACQUIRE,         /* acquire, several keys */
    NGX_HTTP_WEBHOOK_LOCK_CMD_RELEASE,
    NGX_HTTP_WEBHOOK_LOCK_CMD_WAIT,            /* queue script: take or queue */
    NGX_HTTP_WEBHOOK_LOCK_CMD_HANDOFF,         /* release to the queue */
    NGX_HTTP_WEBHOOK_LOCK_CMD_LEAVE,           /* out of the queue */
    NGX_HTTP_WEBHOOK_LOCK_CMD_RENEW            /* the ttl again, if ours */
} ngx_http_webhook_lock_command_e;


typedef struct {
    ngx_str_t                            text;
    u_char                               sha[SHA_DIGEST_LENGTH * 2];
    ngx_uint_t                           dedup;     /* loaded if used */
    ngx_uint_t                           queue;     /* loaded if used */
} ngx_http_webhook_lock_script_t;


/*
 * rc: the command's integer result (>= 0), or NGX_ERROR when Redis
 * answered with an error, timed out, or the connection went away.
 */
typedef void (*ngx_http_webhook_lock_reply_pt)(void *data, ngx_int_t rc);


/*
 * A command in flight: its arguments, with copies of the keys and the
 * token, in one allocation.  Owned by the Redis code, never by a
 * request: freed by the reply callback alone, which hiredis always
 * calls, with a NULL reply when the context dies.  A request only ever
 * clears "handler" (orphan).  A release that could not be done waits in
 * "deferred" instead.
 */

typedef struct ngx_http_webhook_lock_ticket_s  ngx_http_webhook_lock_ticket_t;

struct ngx_http_webhook_lock_ticket_s {
    ngx_http_webhook_lock_reply_pt       handler;   /* NULL: nobody waits */
    void                                *data;
    ngx_event_t                          timer;
    ngx_queue_t                          queue;     /* in "deferred" */
    ngx_http_webhook_lock_command_e      command;
    ngx_http_webhook_lock_script_t      *script;    /* NULL: SET */
    ngx_msec_t                           ms;        /* ttl or hold */
    ngx_msec_t                           start;     /* sent or deferred */
    ngx_msec_t                           expire;    /* 0: not known */
    ngx_msec_t                           hint;      /* from a "w" reply */
    ngx_str_t                           *keys;      /* copies, then marks */
    ngx_uint_t                           nkeys;
    ngx_uint_t                           nmarks;    /* dedup marks */
    ngx_str_t                            token;
    int                                  argc;
    const char                         **argv;      /* for the EVAL retry */
    size_t                              *argvlen;
    unsigned                             retried:1;
    unsigned                             connecting:1; /* not sent yet */
};


/* in init_process: the scripts' SHA1s */
void ngx_http_webhook_lock_scripts_init(void);

/* in the command connection's setup: SCRIPT LOAD of those in use */
ngx_int_t ngx_http_webhook_lock_scripts_load(ngx_http_webhook_lock_conn_t *cn);


/*
 * One builder per command; each returns a ticket with its arguments
 * (handler, timer and the rest zeroed), or NULL.  "keys" are the lock
 * keys, "marks" the dedup marks (nmarks 0: none).
 */

/* SET key token NX PX ttl, or the acquire or dedup script */
ngx_http_webhook_lock_ticket_t *ngx_http_webhook_lock_script_acquire(
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks,
    ngx_str_t *token, ngx_msec_t ttl);

/* the release or settle script */
ngx_http_webhook_lock_ticket_t *ngx_http_webhook_lock_script_release(
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks,
    ngx_str_t *token, ngx_msec_t hold, ngx_msec_t done);

/*
 * the queue script: "w", take or queue; a queued entry lives "lease"
 * more milliseconds, unless asked again meanwhile
 */
ngx_http_webhook_lock_ticket_t *ngx_http_webhook_lock_script_wait(
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks,
    ngx_str_t *token, ngx_msec_t ttl, ngx_msec_t wait, ngx_uint_t max,
    ngx_str_t *channel, ngx_msec_t lease);

/* the queue script: "r", release to the first in line */
ngx_http_webhook_lock_ticket_t *ngx_http_webhook_lock_script_handoff(
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks,
    ngx_str_t *token, ngx_msec_t hold, ngx_msec_t done);

/* the queue script: "l", out of the queues, marks still ours deleted */
ngx_http_webhook_lock_ticket_t *ngx_http_webhook_lock_script_leave(
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *marks, ngx_uint_t nmarks,
    ngx_str_t *token, ngx_msec_t ttl);

/* the release script as a renewal: the ttl again, if still ours */
ngx_http_webhook_lock_ticket_t *ngx_http_webhook_lock_script_renew(
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *token, ngx_msec_t ttl);

/* NOSCRIPT: the same arguments, as EVAL with the script's text */
void ngx_http_webhook_lock_script_eval(ngx_http_webhook_lock_ticket_t *t);

/* a deferred release: its last argument, the hold, rewritten */
void ngx_http_webhook_lock_script_hold(ngx_http_webhook_lock_ticket_t *t,
    ngx_msec_t hold);

/* the reply as the command's result, >= 0, or NGX_ERROR (logged) */
ngx_int_t ngx_http_webhook_lock_script_result(
    ngx_http_webhook_lock_ticket_t *t, redisReply *reply, ngx_str_t *name);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_REDIS_SCRIPTS_H_INCLUDED_ */
