
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_webhook_lock_redis_sentinel.h"
#include "ngx_http_webhook_lock_status.h"


/* the connections that follow the master: the command one, the subscriber */
#define NGX_HTTP_WEBHOOK_LOCK_SENTINEL_CLIENTS  2

/* a name, as Sentinel may announce one (resolve-hostnames) */
#define NGX_HTTP_WEBHOOK_LOCK_SENTINEL_HOST_LEN  256

#define NGX_HTTP_WEBHOOK_LOCK_SENTINEL_NAME_LEN                              \
    (NGX_HTTP_WEBHOOK_LOCK_SENTINEL_HOST_LEN + sizeof("[]:65535"))

/*
 * The longest wait for the promotion once a failover was seen to begin,
 * and for +switch-master once the promotion was seen
 */
#define NGX_HTTP_WEBHOOK_LOCK_SENTINEL_PAUSE     10000


typedef struct {
    ngx_http_webhook_lock_conn_t        *cn;
    ngx_str_t                            at;        /* where it went */
    u_char                               name[
                                      NGX_HTTP_WEBHOOK_LOCK_SENTINEL_NAME_LEN];
    unsigned                             fresh:1;   /* moved: no question */
} ngx_http_webhook_lock_sentinel_client_t;


/*
 * One per worker.  A question goes to one sentinel at a time, starting
 * with the last that answered; each sentinel has a connection of its own
 * for questions, opened when first asked and kept, and one that listens
 * to its events.  A connection that lost its master asks again rather
 * than going back to the address it had; one moved to a new master goes
 * there straight.
 *
 * Every sentinel is listened to, since only the one that runs a failover
 * says that it has begun and when the replica is promoted.  In between
 * no lock is taken: the old master takes writes until the sentinels
 * switch, while the replica promoted no longer copies them, so a lock
 * taken there would not be seen on the new master.  From the promotion
 * on, the connections go to the new master, while the other sentinels
 * may still name the old one until they switch too: they are not asked.
 */

struct ngx_http_webhook_lock_sentinel_s {
    ngx_http_webhook_lock_redis_conf_t  *conf;
    ngx_http_webhook_lock_redis_addr_t  *addrs;     /* the sentinels */
    ngx_http_webhook_lock_redis_conf_t  *confs;     /* one per sentinel */
    ngx_http_webhook_lock_conn_t        *query;     /* one per sentinel */
    ngx_uint_t                           n;
    ngx_uint_t                           current;   /* asked now or next */
    ngx_uint_t                           tried;     /* for this question */
    ngx_http_webhook_lock_conn_t        *watch;     /* one per sentinel */
    ngx_event_t                          timer;     /* the question's */
    ngx_event_t                          pause;     /* a failover's step */
    ngx_event_t                          step;      /* posted */
    ngx_http_webhook_lock_redis_addr_t   master;
    ngx_http_webhook_lock_sentinel_client_t
                          clients[NGX_HTTP_WEBHOOK_LOCK_SENTINEL_CLIENTS];
    ngx_uint_t                           nclients;
    u_char                               host[
                                      NGX_HTTP_WEBHOOK_LOCK_SENTINEL_HOST_LEN];
    u_char                               name[
                                      NGX_HTTP_WEBHOOK_LOCK_SENTINEL_NAME_LEN];
    unsigned                             querying:1;
    unsigned                             next:1;    /* ask "current" */
    unsigned                             sent:1;
    unsigned                             answered:1;
    unsigned                             unknown:1; /* "no such master" */
    unsigned                             follow:1;  /* clients to move */
    unsigned                             known:1;   /* "master" is set */
    unsigned                             paused:1;  /* a failover runs */
    unsigned                             moving:1;  /* promoted, no
                                                       switch yet */
    unsigned                             exiting:1;
};


static ngx_http_webhook_lock_sentinel_client_t *
    ngx_http_webhook_lock_sentinel_client(ngx_http_webhook_lock_sentinel_t *st,
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_sentinel_locate(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_sentinel_serve(
    ngx_http_webhook_lock_sentinel_t *st,
    ngx_http_webhook_lock_sentinel_client_t *c);
static void ngx_http_webhook_lock_sentinel_follow(
    ngx_http_webhook_lock_sentinel_t *st);
static void ngx_http_webhook_lock_sentinel_question(
    ngx_http_webhook_lock_sentinel_t *st);
static void ngx_http_webhook_lock_sentinel_ask(
    ngx_http_webhook_lock_sentinel_t *st);
static ngx_int_t ngx_http_webhook_lock_sentinel_send(
    ngx_http_webhook_lock_sentinel_t *st, ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_sentinel_answer(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_int_t ngx_http_webhook_lock_sentinel_master(
    ngx_http_webhook_lock_sentinel_t *st, u_char *host, size_t len,
    ngx_int_t port);
static void ngx_http_webhook_lock_sentinel_next(
    ngx_http_webhook_lock_sentinel_t *st);
static void ngx_http_webhook_lock_sentinel_step_handler(ngx_event_t *ev);
static void ngx_http_webhook_lock_sentinel_timeout(ngx_event_t *ev);
static void ngx_http_webhook_lock_sentinel_query_init(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_sentinel_query_ready(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_sentinel_query_lost(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_sentinel_watch_init(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_sentinel_watch_message(
    redisAsyncContext *ac, void *r, void *privdata);
static void ngx_http_webhook_lock_sentinel_event(
    ngx_http_webhook_lock_sentinel_t *st, ngx_http_webhook_lock_conn_t *cn,
    ngx_str_t *channel, ngx_str_t *message);
static void ngx_http_webhook_lock_sentinel_switch(
    ngx_http_webhook_lock_sentinel_t *st, ngx_str_t *host, ngx_str_t *port,
    ngx_uint_t promoted);
static void ngx_http_webhook_lock_sentinel_paused(
    ngx_http_webhook_lock_sentinel_t *st, ngx_uint_t on);
static void ngx_http_webhook_lock_sentinel_pause_handler(ngx_event_t *ev);
static void ngx_http_webhook_lock_sentinel_watch_ready(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_sentinel_watch_lost(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_sentinel_shutdown(
    ngx_http_webhook_lock_conn_t *cn);
static void ngx_http_webhook_lock_sentinel_role_reply(redisAsyncContext *ac,
    void *r, void *privdata);


/*
 * The events of a failover: the first ones come only from the sentinel
 * that runs it, the last, +switch-master, from every sentinel once it
 * knows.
 */

static ngx_str_t  ngx_http_webhook_lock_sentinel_channels[] = {
    ngx_string("+switch-master"),
    ngx_string("+try-failover"),
    ngx_string("+selected-slave"),
    ngx_string("+failover-state-send-slaveof-noone"),
    ngx_string("+promoted-slave"),
    ngx_string("-failover-abort-not-elected"),
    ngx_string("-failover-abort-no-good-slave"),
    ngx_string("-failover-abort-slave-timeout"),
    ngx_string("-failover-abort-master-timeout"),
    ngx_string("+failover-end-for-timeout")
};

#define NGX_HTTP_WEBHOOK_LOCK_SENTINEL_CHANNELS                              \
    (sizeof(ngx_http_webhook_lock_sentinel_channels) / sizeof(ngx_str_t))


ngx_http_webhook_lock_sentinel_t *
ngx_http_webhook_lock_sentinel_init(ngx_cycle_t *cycle,
    ngx_http_webhook_lock_redis_conf_t *rcf)
{
    ngx_uint_t                           i;
    ngx_http_webhook_lock_conn_t        *cn;
    ngx_http_webhook_lock_sentinel_t    *st;
    ngx_http_webhook_lock_redis_conf_t  *scf;

    st = ngx_pcalloc(cycle->pool, sizeof(ngx_http_webhook_lock_sentinel_t));
    if (st == NULL) {
        return NULL;
    }

    st->conf = rcf;
    st->addrs = rcf->sentinels->elts;
    st->n = rcf->sentinels->nelts;

    st->confs = ngx_pcalloc(cycle->pool,
                       st->n * sizeof(ngx_http_webhook_lock_redis_conf_t));
    st->query = ngx_pcalloc(cycle->pool,
                            st->n * sizeof(ngx_http_webhook_lock_conn_t));
    st->watch = ngx_pcalloc(cycle->pool,
                            st->n * sizeof(ngx_http_webhook_lock_conn_t));

    if (st->confs == NULL || st->query == NULL || st->watch == NULL) {
        return NULL;
    }

    /* the data's timeouts and resolver; the sentinel's address and AUTH */

    for (i = 0; i < st->n; i++) {
        scf = &st->confs[i];

        *scf = *rcf;

        scf->name = st->addrs[i].name;
        scf->server = st->addrs[i];
        scf->password = rcf->sentinel_password;
        scf->db = 0;
        scf->sentinels = NULL;
        scf->dedup = 0;
        scf->queue = 0;

        ngx_str_null(&scf->user);
        ngx_str_null(&scf->sentinel_password);

        cn = &st->query[i];

        ngx_http_webhook_lock_conn_init(cn, scf, cycle->log, " sentinel", st);

        cn->init = ngx_http_webhook_lock_sentinel_query_init;
        cn->ready_handler = ngx_http_webhook_lock_sentinel_query_ready;
        cn->lost_handler = ngx_http_webhook_lock_sentinel_query_lost;
        cn->shutdown_handler = ngx_http_webhook_lock_sentinel_shutdown;

        cn = &st->watch[i];

        ngx_http_webhook_lock_conn_init(cn, scf, cycle->log,
                                        " sentinel subscriber", st);

        cn->init = ngx_http_webhook_lock_sentinel_watch_init;
        cn->ready_handler = ngx_http_webhook_lock_sentinel_watch_ready;
        cn->lost_handler = ngx_http_webhook_lock_sentinel_watch_lost;
        cn->shutdown_handler = ngx_http_webhook_lock_sentinel_shutdown;
    }

    st->timer.handler = ngx_http_webhook_lock_sentinel_timeout;
    st->timer.data = st;
    st->timer.log = cycle->log;
    st->timer.cancelable = 1;

    st->step.handler = ngx_http_webhook_lock_sentinel_step_handler;
    st->step.data = st;
    st->step.log = cycle->log;

    st->pause.handler = ngx_http_webhook_lock_sentinel_pause_handler;
    st->pause.data = st;
    st->pause.log = cycle->log;
    st->pause.cancelable = 1;

    st->master.host.data = st->host;
    st->master.name.data = st->name;

    for (i = 0; i < st->n; i++) {
        ngx_http_webhook_lock_conn_connect(&st->watch[i]);
    }

    return st;
}


ngx_int_t
ngx_http_webhook_lock_sentinel_attach(ngx_http_webhook_lock_sentinel_t *st,
    ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_sentinel_client_t  *c;

    if (st->nclients == NGX_HTTP_WEBHOOK_LOCK_SENTINEL_CLIENTS) {
        return NGX_ERROR;
    }

    c = &st->clients[st->nclients++];

    c->cn = cn;
    c->at.data = c->name;

    cn->locate = ngx_http_webhook_lock_sentinel_locate;
    cn->locator = st;

    return NGX_OK;
}


void
ngx_http_webhook_lock_sentinel_exit(ngx_http_webhook_lock_sentinel_t *st)
{
    ngx_uint_t  i;

    if (st->exiting) {
        return;
    }

    st->exiting = 1;
    st->querying = 0;

    if (st->timer.timer_set) {
        ngx_del_timer(&st->timer);
    }

    if (st->pause.timer_set) {
        ngx_del_timer(&st->pause);
    }

    if (st->step.posted) {
        ngx_delete_posted_event(&st->step);
    }

    for (i = 0; i < st->n; i++) {
        ngx_http_webhook_lock_conn_exit(&st->query[i]);
        ngx_http_webhook_lock_conn_exit(&st->watch[i]);
    }
}


static ngx_http_webhook_lock_sentinel_client_t *
ngx_http_webhook_lock_sentinel_client(ngx_http_webhook_lock_sentinel_t *st,
    ngx_http_webhook_lock_conn_t *cn)
{
    ngx_uint_t  i;

    for (i = 0; i < st->nclients; i++) {
        if (st->clients[i].cn == cn) {
            return &st->clients[i];
        }
    }

    return NULL;
}


/* cn->locate of the data connections, from conn_connect() */

static void
ngx_http_webhook_lock_sentinel_locate(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_sentinel_t *st = cn->locator;

    ngx_http_webhook_lock_sentinel_client_t  *c;

    if (st->paused) {
        /* again after a backoff, or at once when the failover ends */
        ngx_http_webhook_lock_conn_drop(cn, "a failover is under way");
        return;
    }

    c = ngx_http_webhook_lock_sentinel_client(st, cn);

    if ((c->fresh || st->moving) && st->known && !st->querying) {
        ngx_http_webhook_lock_sentinel_serve(st, c);
        return;
    }

    /* served when the answer comes */

    ngx_http_webhook_lock_sentinel_question(st);
}


static void
ngx_http_webhook_lock_sentinel_serve(ngx_http_webhook_lock_sentinel_t *st,
    ngx_http_webhook_lock_sentinel_client_t *c)
{
    c->fresh = 0;
    c->at.len = ngx_cpymem(c->name, st->master.name.data,
                           st->master.name.len)
                - c->name;

    ngx_http_webhook_lock_conn_connect_addr(c->cn, &st->master);
}


/*
 * The master is known anew: connections waiting for it go there, those
 * elsewhere or waiting for a reconnect go there at once.  During a
 * failover every connection closes, and stays closed until its end.
 */

static void
ngx_http_webhook_lock_sentinel_follow(ngx_http_webhook_lock_sentinel_t *st)
{
    ngx_uint_t                                i;
    ngx_http_webhook_lock_conn_t             *cn;
    ngx_http_webhook_lock_sentinel_client_t  *c;

    for (i = 0; i < st->nclients; i++) {
        c = &st->clients[i];
        cn = c->cn;

        if (cn->exiting) {
            continue;
        }

        if (st->paused) {
            if (cn->state != NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN) {
                ngx_http_webhook_lock_conn_drop(cn,
                                                "a failover is under way");
            }

            continue;
        }

        if (cn->locating) {
            if (st->known && !st->querying) {
                ngx_http_webhook_lock_sentinel_serve(st, c);
            }

            continue;
        }

        if (cn->state == NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN) {
            if (cn->reconnect.timer_set) {
                c->fresh = 1;
                ngx_http_webhook_lock_conn_restart(cn);
            }

            continue;
        }

        if (c->at.len != st->master.name.len
            || ngx_strncmp(c->at.data, st->master.name.data, c->at.len) != 0)
        {
            ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                           "webhook redis%s moves from %V to %V", cn->role,
                           &c->at, &st->master.name);

            c->fresh = 1;
            ngx_http_webhook_lock_conn_restart(cn);
        }
    }
}


static void
ngx_http_webhook_lock_sentinel_question(ngx_http_webhook_lock_sentinel_t *st)
{
    if (st->querying || st->exiting) {
        return;
    }

    st->querying = 1;
    st->next = 1;
    st->tried = 0;
    st->unknown = 0;

    /* asked from a posted event: this may run inside hiredis */

    if (!st->step.posted) {
        ngx_post_event(&st->step, &ngx_posted_events);
    }
}


static void
ngx_http_webhook_lock_sentinel_ask(ngx_http_webhook_lock_sentinel_t *st)
{
    ngx_uint_t                                i;
    const char                               *reason;
    ngx_http_webhook_lock_conn_t             *cn;
    ngx_http_webhook_lock_sentinel_client_t  *c;

    while (st->querying && st->next) {

        if (st->tried == st->n) {
            st->querying = 0;
            st->next = 0;

            reason = st->unknown ? "no sentinel knows the master"
                                 : "no sentinel answered";

            for (i = 0; i < st->nclients; i++) {
                c = &st->clients[i];

                if (c->cn->locating) {
                    ngx_http_webhook_lock_conn_drop(c->cn, reason);
                }
            }

            return;
        }

        st->next = 0;
        st->tried++;

        cn = &st->query[st->current];

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "webhook redis asks sentinel %V", &cn->conf->name);

        switch (cn->state) {

        case NGX_HTTP_WEBHOOK_LOCK_REDIS_READY:
            if (ngx_http_webhook_lock_sentinel_send(st, cn) == NGX_OK) {
                return;
            }

            /* the next, from the lost handler */
            ngx_http_webhook_lock_conn_drop(cn, "cannot send a command");
            break;

        case NGX_HTTP_WEBHOOK_LOCK_REDIS_DOWN:

            /* asked now, whatever the backoff */

            if (cn->reconnect.timer_set) {
                ngx_del_timer(&cn->reconnect);
            }

            /* refused at once: the lost handler goes on to the next */
            ngx_http_webhook_lock_conn_connect(cn);
            break;

        default:
            /* the ready or the lost handler goes on */
            return;
        }
    }
}


static ngx_int_t
ngx_http_webhook_lock_sentinel_send(ngx_http_webhook_lock_sentinel_t *st,
    ngx_http_webhook_lock_conn_t *cn)
{
    size_t       argvlen[3];
    const char  *argv[3];

    argv[0] = "SENTINEL";
    argvlen[0] = sizeof("SENTINEL") - 1;
    argv[1] = "get-master-addr-by-name";
    argvlen[1] = sizeof("get-master-addr-by-name") - 1;
    argv[2] = (const char *) st->conf->server.host.data;
    argvlen[2] = st->conf->server.host.len;

    if (redisAsyncCommandArgv(cn->ac, ngx_http_webhook_lock_sentinel_answer,
                              st, 3, argv, argvlen)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    st->sent = 1;

    ngx_add_timer(&st->timer, cn->conf->timeout);

    return NGX_OK;
}


static void
ngx_http_webhook_lock_sentinel_answer(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_webhook_lock_sentinel_t *st = privdata;

    u_char                        *p, reason[NGX_MAX_ERROR_STR];
    ngx_int_t                      port;
    redisReply                    *reply, **e;
    ngx_http_webhook_lock_conn_t  *cn;

    cn = ac->data;
    reply = r;

    /* NULL: the connection went, and the lost handler goes on */

    if (reply == NULL
        || ac != cn->ac
        || !st->sent
        || cn != &st->query[st->current])
    {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        p = ngx_snprintf(reason, sizeof(reason) - 1,
                         "\"SENTINEL\" failed: %*s",
                         (size_t) reply->len, reply->str);
        *p = '\0';

        ngx_http_webhook_lock_conn_fail(cn, (char *) reason);
        return;
    }

    st->sent = 0;

    if (st->timer.timer_set) {
        ngx_del_timer(&st->timer);
    }

    e = reply->element;

    if (reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 2
        && e[0]->type == REDIS_REPLY_STRING
        && e[1]->type == REDIS_REPLY_STRING)
    {
        port = ngx_atoi((u_char *) e[1]->str, e[1]->len);

        /* a sentinel behind the one that promoted: its answer is old */

        if (st->moving
            || ngx_http_webhook_lock_sentinel_master(st,
                                                     (u_char *) e[0]->str,
                                                     e[0]->len, port)
               == NGX_OK)
        {
            st->answered = 1;
            ngx_post_event(&st->step, &ngx_posted_events);
            return;
        }

    } else if (reply->type == REDIS_REPLY_NIL) {
        st->unknown = 1;

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "webhook redis sentinel %V knows no \"%V\"",
                       &cn->conf->name, &st->conf->server.host);

    } else {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis sentinel %V: unexpected reply of type %d to "
                      "\"SENTINEL get-master-addr-by-name\"",
                      &cn->conf->name, reply->type);
    }

    ngx_http_webhook_lock_sentinel_next(st);
}


/* NGX_ERROR: not an address */

static ngx_int_t
ngx_http_webhook_lock_sentinel_master(ngx_http_webhook_lock_sentinel_t *st,
    u_char *host, size_t len, ngx_int_t port)
{
    ngx_uint_t   moved, ip;
#if (NGX_HAVE_INET6)
    u_char       buf[sizeof(struct in6_addr)];
#endif

    if (len == 0
        || len >= NGX_HTTP_WEBHOOK_LOCK_SENTINEL_HOST_LEN
        || port <= 0
        || port > 65535)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis sentinel: invalid address \"%*s\" port %i "
                      "for \"%V\"", ngx_min(len, 64), host, port,
                      &st->conf->server.host);
        return NGX_ERROR;
    }

    if (st->known
        && st->master.port == (in_port_t) port
        && st->master.host.len == len
        && ngx_strncmp(st->master.host.data, host, len) == 0)
    {
        return NGX_OK;
    }

    moved = st->known;

    ngx_memcpy(st->host, host, len);
    st->host[len] = '\0';

    st->master.host.len = len;
    st->master.port = (in_port_t) port;

    ip = (ngx_inet_addr(host, len) != INADDR_NONE);
#if (NGX_HAVE_INET6)
    ip = ip || ngx_inet6_addr(host, len, buf) == NGX_OK;
#endif

    /* a name: resolved when connecting, as the sentinels' own */
    st->master.resolve = !ip;

    st->master.name.len = ngx_sprintf(st->name,
                                      ngx_strlchr(host, host + len, ':')
                                      ? "[%*s]:%i" : "%*s:%i",
                                      len, host, port)
                          - st->name;

    st->known = 1;

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "redis master %V is at %V", &st->conf->server.host,
                  &st->master.name);

    if (moved) {
        ngx_http_webhook_lock_stat_add(
                         NGX_HTTP_WEBHOOK_LOCK_STAT_REDIS_MASTER_SWITCHES, 1);
    }

    return NGX_OK;
}


static void
ngx_http_webhook_lock_sentinel_next(ngx_http_webhook_lock_sentinel_t *st)
{
    st->current = (st->current + 1) % st->n;
    st->next = 1;

    if (!st->step.posted) {
        ngx_post_event(&st->step, &ngx_posted_events);
    }
}


static void
ngx_http_webhook_lock_sentinel_step_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_sentinel_t *st = ev->data;

    if (st->exiting) {
        return;
    }

    if (st->answered) {
        st->answered = 0;
        st->querying = 0;
        st->next = 0;
        st->follow = 0;

        ngx_http_webhook_lock_sentinel_follow(st);
        return;
    }

    if (st->follow) {
        st->follow = 0;
        ngx_http_webhook_lock_sentinel_follow(st);
    }

    ngx_http_webhook_lock_sentinel_ask(st);
}


static void
ngx_http_webhook_lock_sentinel_timeout(ngx_event_t *ev)
{
    ngx_http_webhook_lock_sentinel_t *st = ev->data;

    /* the lost handler asks the next one */

    ngx_http_webhook_lock_conn_drop(&st->query[st->current],
                                    "sentinel timed out");
}


static void
ngx_http_webhook_lock_sentinel_query_init(ngx_http_webhook_lock_conn_t *cn)
{
    if (ngx_http_webhook_lock_conn_login(cn, 0) != NGX_OK) {
        ngx_http_webhook_lock_conn_fail(cn, "cannot send the setup commands");
    }
}


static void
ngx_http_webhook_lock_sentinel_query_ready(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_sentinel_t *st = cn->data;

    if (!st->querying
        || st->next
        || st->sent
        || cn != &st->query[st->current])
    {
        return;
    }

    if (ngx_http_webhook_lock_sentinel_send(st, cn) != NGX_OK) {
        ngx_http_webhook_lock_conn_fail(cn, "cannot send a command");
    }
}


static void
ngx_http_webhook_lock_sentinel_query_lost(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_sentinel_t *st = cn->data;

    if (!st->querying || st->next || cn != &st->query[st->current]) {
        return;
    }

    st->sent = 0;

    if (st->timer.timer_set) {
        ngx_del_timer(&st->timer);
    }

    ngx_http_webhook_lock_sentinel_next(st);
}


static void
ngx_http_webhook_lock_sentinel_watch_init(ngx_http_webhook_lock_conn_t *cn)
{
    size_t       argvlen[NGX_HTTP_WEBHOOK_LOCK_SENTINEL_CHANNELS + 1];
    ngx_uint_t   i;
    const char  *argv[NGX_HTTP_WEBHOOK_LOCK_SENTINEL_CHANNELS + 1];

    if (ngx_http_webhook_lock_conn_login(cn, 0) != NGX_OK) {
        goto failed;
    }

    argv[0] = "SUBSCRIBE";
    argvlen[0] = sizeof("SUBSCRIBE") - 1;

    for (i = 0; i < NGX_HTTP_WEBHOOK_LOCK_SENTINEL_CHANNELS; i++) {
        argv[i + 1] = (const char *)
                      ngx_http_webhook_lock_sentinel_channels[i].data;
        argvlen[i + 1] = ngx_http_webhook_lock_sentinel_channels[i].len;
    }

    if (ngx_http_webhook_lock_conn_setup(cn,
                                 ngx_http_webhook_lock_sentinel_watch_message,
                                 cn->data, (int) i + 1, argv, argvlen)
        != NGX_OK)
    {
        goto failed;
    }

    return;

failed:

    ngx_http_webhook_lock_conn_fail(cn, "cannot send the setup commands");
}


static void
ngx_http_webhook_lock_sentinel_watch_message(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_webhook_lock_sentinel_t *st = privdata;

    ngx_str_t                      channel, message;
    redisReply                    *reply, **e;
    ngx_http_webhook_lock_conn_t  *cn;

    cn = ac->data;
    reply = r;

    if (reply == NULL || ac != cn->ac) {
        return;
    }

    e = reply->element;

    if (reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 3
        && e[0]->type == REDIS_REPLY_STRING
        && e[1]->type == REDIS_REPLY_STRING)
    {
        if (e[0]->len == 7
            && ngx_strncmp(e[0]->str, "message", 7) == 0
            && e[2]->type == REDIS_REPLY_STRING)
        {
            channel.data = (u_char *) e[1]->str;
            channel.len = e[1]->len;
            message.data = (u_char *) e[2]->str;
            message.len = e[2]->len;

            ngx_http_webhook_lock_sentinel_event(st, cn, &channel, &message);
            return;
        }

        /* one confirmation per channel: ready with the last */

        if (e[0]->len == 9
            && ngx_strncmp(e[0]->str, "subscribe", 9) == 0
            && e[2]->type == REDIS_REPLY_INTEGER)
        {
            if (e[2]->integer
                == (long long) NGX_HTTP_WEBHOOK_LOCK_SENTINEL_CHANNELS)
            {
                ngx_http_webhook_lock_conn_setup_done(cn);
            }

            return;
        }
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis sentinel %V: unexpected reply of type %d to "
                  "\"SUBSCRIBE\"", &cn->conf->name, reply->type);
}


/*
 * +switch-master: "NAME OLD-IP OLD-PORT NEW-IP NEW-PORT"; the others:
 * "TYPE NAME IP PORT @ MASTER-NAME MASTER-IP MASTER-PORT", or without
 * the part from "@" when the instance is the master.
 */

static void
ngx_http_webhook_lock_sentinel_event(ngx_http_webhook_lock_sentinel_t *st,
    ngx_http_webhook_lock_conn_t *cn, ngx_str_t *channel, ngx_str_t *message)
{
    u_char      *p, *last, *sp;
    ngx_str_t   *master, word[8];
    ngx_uint_t   n;

    p = message->data;
    last = p + message->len;

    for (n = 0; n < 8 && p < last; n++) {
        sp = ngx_strlchr(p, last, ' ');
        if (sp == NULL) {
            sp = last;
        }

        word[n].data = p;
        word[n].len = sp - p;

        p = (sp < last) ? sp + 1 : last;
    }

    if (channel->len == sizeof("+switch-master") - 1
        && ngx_strncmp(channel->data, "+switch-master", channel->len) == 0)
    {
        master = &word[0];

        if (n != 5) {
            goto invalid;
        }

    } else if (n == 8 && word[4].len == 1 && word[4].data[0] == '@') {
        master = &word[5];

    } else if (n == 4) {
        master = &word[1];

    } else {
        goto invalid;
    }

    if (master->len != st->conf->server.host.len
        || ngx_strncmp(master->data, st->conf->server.host.data, master->len)
           != 0)
    {
        return;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "webhook redis sentinel %V: %V %V", &cn->conf->name,
                   channel, message);

    if (master == &word[0]) {
        ngx_http_webhook_lock_sentinel_switch(st, &word[3], &word[4], 0);
        return;
    }

    if (channel->len == sizeof("+promoted-slave") - 1
        && ngx_strncmp(channel->data, "+promoted-slave", channel->len) == 0)
    {
        ngx_http_webhook_lock_sentinel_switch(st, &word[2], &word[3], 1);
        return;
    }

    /* "-failover-abort-...", "+failover-end-for-timeout": no switch */

    ngx_http_webhook_lock_sentinel_paused(st,
                   channel->data[0] == '+'
                   && (channel->len != sizeof("+failover-end-for-timeout") - 1
                       || ngx_strncmp(channel->data,
                                      "+failover-end-for-timeout",
                                      channel->len)
                          != 0));
    return;

invalid:

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis sentinel %V: invalid \"%V\" message",
                  &cn->conf->name, channel);
}


/* +promoted-slave from the sentinel that runs the failover, or the end */

static void
ngx_http_webhook_lock_sentinel_switch(ngx_http_webhook_lock_sentinel_t *st,
    ngx_str_t *host, ngx_str_t *port, ngx_uint_t promoted)
{
    if (ngx_http_webhook_lock_sentinel_master(st, host->data, host->len,
                                              ngx_atoi(port->data, port->len))
        != NGX_OK)
    {
        return;
    }

    if (st->pause.timer_set) {
        ngx_del_timer(&st->pause);
    }

    st->paused = 0;
    st->moving = promoted;

    if (promoted) {
        ngx_add_timer(&st->pause, NGX_HTTP_WEBHOOK_LOCK_SENTINEL_PAUSE);
    }

    st->follow = 1;

    if (!st->step.posted) {
        ngx_post_event(&st->step, &ngx_posted_events);
    }
}


/*
 * A failover begins: the connections close, requests meet the failure
 * policy until the promotion (or the switch).  It ends without one: the
 * sentinels are asked again, and the connections follow their answer.
 */

static void
ngx_http_webhook_lock_sentinel_paused(ngx_http_webhook_lock_sentinel_t *st,
    ngx_uint_t on)
{
    if (on) {
        if (st->paused || st->moving) {
            return;
        }

        st->paused = 1;
        ngx_add_timer(&st->pause, NGX_HTTP_WEBHOOK_LOCK_SENTINEL_PAUSE);

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "redis master %V: a failover begins, no lock is "
                      "taken until the new master is known",
                      &st->conf->server.host);

        st->follow = 1;

        if (!st->step.posted) {
            ngx_post_event(&st->step, &ngx_posted_events);
        }

        return;
    }

    if (!st->paused) {
        return;
    }

    st->paused = 0;

    if (st->pause.timer_set) {
        ngx_del_timer(&st->pause);
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "redis master %V: the failover ended without a switch",
                  &st->conf->server.host);

    ngx_http_webhook_lock_sentinel_question(st);
}


static void
ngx_http_webhook_lock_sentinel_pause_handler(ngx_event_t *ev)
{
    ngx_http_webhook_lock_sentinel_t *st = ev->data;

    if (st->moving) {
        st->moving = 0;
        return;
    }

    ngx_http_webhook_lock_sentinel_paused(st, 0);
}


/* a switch may have come while nobody listened: the sentinels are asked */

static void
ngx_http_webhook_lock_sentinel_watch_ready(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_sentinel_t *st = cn->data;

    if (st->known && !st->moving) {
        ngx_http_webhook_lock_sentinel_question(st);
    }
}


/* the others listen meanwhile; this one comes back after a backoff */

static void
ngx_http_webhook_lock_sentinel_watch_lost(ngx_http_webhook_lock_conn_t *cn)
{
}


/* worker_shutdown_timeout */

static void
ngx_http_webhook_lock_sentinel_shutdown(ngx_http_webhook_lock_conn_t *cn)
{
    ngx_http_webhook_lock_sentinel_exit(cn->data);
}


ngx_int_t
ngx_http_webhook_lock_sentinel_role(ngx_http_webhook_lock_conn_t *cn)
{
    size_t       argvlen[1];
    const char  *argv[1];

    argv[0] = "ROLE";
    argvlen[0] = sizeof("ROLE") - 1;

    return ngx_http_webhook_lock_conn_setup(cn,
                                     ngx_http_webhook_lock_sentinel_role_reply,
                                     cn->locator, 1, argv, argvlen);
}


static void
ngx_http_webhook_lock_sentinel_role_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_webhook_lock_sentinel_t *st = privdata;

    u_char                                   *p, reason[NGX_MAX_ERROR_STR];
    redisReply                               *reply, **e;
    ngx_http_webhook_lock_conn_t             *cn;
    ngx_http_webhook_lock_sentinel_client_t  *c;

    cn = ac->data;
    reply = r;

    if (reply == NULL
        || ac != cn->ac
        || cn->state != NGX_HTTP_WEBHOOK_LOCK_REDIS_SETUP)
    {
        return;
    }

    e = reply->element;

    if (reply->type == REDIS_REPLY_ARRAY
        && reply->elements > 0
        && e[0]->type == REDIS_REPLY_STRING)
    {
        if (e[0]->len == 6 && ngx_strncmp(e[0]->str, "master", 6) == 0) {
            ngx_http_webhook_lock_conn_setup_done(cn);
            return;
        }

        c = ngx_http_webhook_lock_sentinel_client(st, cn);

        p = ngx_snprintf(reason, sizeof(reason) - 1,
                         "%V is no master but a \"%*s\"", &c->at,
                         (size_t) ngx_min(e[0]->len, 16), e[0]->str);

    } else if (reply->type == REDIS_REPLY_ERROR) {

        /* an ACL user without ROLE (@admin): READONLY still tells */

        if (reply->len >= sizeof("NOPERM") - 1
            && ngx_strncmp(reply->str, "NOPERM", sizeof("NOPERM") - 1) == 0)
        {
            ngx_http_webhook_lock_conn_setup_done(cn);
            return;
        }

        p = ngx_snprintf(reason, sizeof(reason) - 1, "\"ROLE\" failed: %*s",
                         (size_t) reply->len, reply->str);

    } else {
        p = ngx_snprintf(reason, sizeof(reason) - 1,
                         "unexpected reply of type %d to \"ROLE\"",
                         reply->type);
    }

    *p = '\0';

    /* connected again later, to what the sentinels say then */

    ngx_http_webhook_lock_conn_fail(cn, (char *) reason);
}


ngx_int_t
ngx_http_webhook_lock_sentinel_readonly(ngx_http_webhook_lock_conn_t *cn,
    redisAsyncContext *ac, redisReply *reply)
{
    u_char                                   *p, reason[NGX_MAX_ERROR_STR];
    ngx_http_webhook_lock_sentinel_t         *st;
    ngx_http_webhook_lock_sentinel_client_t  *c;

    st = cn->locator;

    if (st == NULL
        || reply->type != REDIS_REPLY_ERROR
        || reply->len < sizeof("READONLY") - 1
        || ngx_strncmp(reply->str, "READONLY", sizeof("READONLY") - 1) != 0)
    {
        return 0;
    }

    if (ac == cn->ac) {
        c = ngx_http_webhook_lock_sentinel_client(st, cn);

        p = ngx_snprintf(reason, sizeof(reason) - 1,
                         "%V is a replica now (READONLY)", &c->at);
        *p = '\0';

        ngx_http_webhook_lock_conn_fail(cn, (char *) reason);
    }

    return 1;
}
