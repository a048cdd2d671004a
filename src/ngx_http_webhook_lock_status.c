
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_webhook_lock_status.h"


#define NGX_HTTP_WEBHOOK_LOCK_SLOTS      256
#define NGX_HTTP_WEBHOOK_LOCK_NAME_LEN   64
#define NGX_HTTP_WEBHOOK_LOCK_STATUSES   (NGX_HTTP_WEBHOOK_LOCK_OPEN + 1)
#define NGX_HTTP_WEBHOOK_LOCK_BUCKETS    13


struct ngx_http_webhook_lock_stat_slot_s {
    u_char                        name[NGX_HTTP_WEBHOOK_LOCK_NAME_LEN];
    size_t                        len;
    ngx_atomic_t                  requests[NGX_HTTP_WEBHOOK_LOCK_STATUSES];
};


typedef struct {
    ngx_atomic_t                  buckets[NGX_HTTP_WEBHOOK_LOCK_BUCKETS + 1];
    ngx_atomic_t                  sum;            /* milliseconds */
    ngx_atomic_t                  count;
} ngx_http_webhook_lock_hist_t;


/* in shared memory: one for all workers, kept across reloads */

typedef struct {
    ngx_atomic_t                  stats[NGX_HTTP_WEBHOOK_LOCK_STAT_N];
    ngx_http_webhook_lock_hist_t  hists[NGX_HTTP_WEBHOOK_LOCK_HIST_N];
    ngx_uint_t                    nslots;
    ngx_http_webhook_lock_stat_slot_t  slots[NGX_HTTP_WEBHOOK_LOCK_SLOTS];
} ngx_http_webhook_lock_shm_t;


typedef struct {
    ngx_str_t                            name;
    ngx_http_webhook_lock_stat_slot_t  **slot;
} ngx_http_webhook_lock_stat_name_t;


/* the zone's data: what this configuration asks for, and the memory */

typedef struct {
    ngx_array_t                   names;
    ngx_http_webhook_lock_shm_t  *sh;
} ngx_http_webhook_lock_stat_ctx_t;


static ngx_shm_zone_t *ngx_http_webhook_lock_stat_add_zone(ngx_conf_t *cf);
static ngx_int_t ngx_http_webhook_lock_stat_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_http_webhook_lock_stat_slot_t *ngx_http_webhook_lock_stat_slot(
    ngx_http_webhook_lock_shm_t *sh, ngx_str_t *name);
static ngx_int_t ngx_http_webhook_lock_status_handler(ngx_http_request_t *r);
static u_char *ngx_http_webhook_lock_status_text(u_char *p,
    ngx_http_webhook_lock_shm_t *sh);
static u_char *ngx_http_webhook_lock_status_json(u_char *p,
    ngx_http_webhook_lock_shm_t *sh);
static u_char *ngx_http_webhook_lock_status_escape(u_char *p,
    ngx_http_webhook_lock_stat_slot_t *slot);


/* the values of $webhook_lock_status, as webhook_status counts them */

ngx_str_t  ngx_http_webhook_lock_status_names[] = {
    ngx_null_string,
    ngx_string("acquired"),
    ngx_string("waited"),
    ngx_string("busy"),
    ngx_string("bypass"),
    ngx_string("duplicate"),
    ngx_string("invalid"),
    ngx_string("unsigned"),
    ngx_string("error"),
    ngx_string("open")
};


/* upper bounds in milliseconds; the last bucket is +Inf */

static ngx_msec_t  ngx_http_webhook_lock_stat_bounds[] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
};


static struct {
    ngx_str_t                     name;
    ngx_str_t                     type;
    ngx_str_t                     help;
} ngx_http_webhook_lock_stat_meta[] = {

    { ngx_string("webhook_lock_redis_commands_total"),
      ngx_string("counter"),
      ngx_string("Commands sent to Redis.") },

    { ngx_string("webhook_lock_redis_errors_total"),
      ngx_string("counter"),
      ngx_string("Redis commands that failed: error replies, lost "
                 "connections, timeouts.") },

    { ngx_string("webhook_lock_redis_timeouts_total"),
      ngx_string("counter"),
      ngx_string("Redis commands that timed out.") },

    { ngx_string("webhook_lock_redis_reconnects_total"),
      ngx_string("counter"),
      ngx_string("Connections to Redis opened again after one was lost.") },

    { ngx_string("webhook_lock_redis_connected_workers"),
      ngx_string("gauge"),
      ngx_string("Worker processes connected to Redis now.") },

    { ngx_string("webhook_lock_locks_held"),
      ngx_string("gauge"),
      ngx_string("Locks held now by requests in flight.") },

    { ngx_string("webhook_lock_requests_waiting"),
      ngx_string("gauge"),
      ngx_string("Requests waiting now for Redis or for a held lock.") },

    { ngx_string("webhook_lock_locks_left_total"),
      ngx_string("counter"),
      ngx_string("Locks left to expire by their ttl, not released, because "
                 "their request ended before the app answered.") },

    { ngx_string("webhook_lock_redis_master_switches_total"),
      ngx_string("counter"),
      ngx_string("Times a worker found the Redis master at a new address "
                 "(Sentinel) and moved its connections there.") }
};


static struct {
    ngx_str_t                     name;
    ngx_str_t                     help;
} ngx_http_webhook_lock_hist_meta[] = {

    { ngx_string("webhook_lock_redis_duration_seconds"),
      ngx_string("Time the lock round trip to Redis took.") },

    { ngx_string("webhook_lock_wait_seconds"),
      ngx_string("Time from a request's first lock attempt to its lock.") }
};


static ngx_http_webhook_lock_shm_t  *ngx_http_webhook_lock_stat_shm;


ngx_int_t
ngx_http_webhook_lock_stat_zone(ngx_conf_t *cf)
{
    return ngx_http_webhook_lock_stat_add_zone(cf) ? NGX_OK : NGX_ERROR;
}


/* the zone, added on first use, with what this configuration asks of it */

static ngx_shm_zone_t *
ngx_http_webhook_lock_stat_add_zone(ngx_conf_t *cf)
{
    ngx_str_t                          name = ngx_string("webhook_lock");
    ngx_shm_zone_t                    *zone;
    ngx_http_webhook_lock_stat_ctx_t  *ctx;

    /* the tag: anything of this module's own */

    zone = ngx_shared_memory_add(cf, &name,
                                 ngx_align(sizeof(ngx_http_webhook_lock_shm_t),
                                           ngx_pagesize)
                                 + 2 * ngx_pagesize,
                                 ngx_http_webhook_lock_status_names);
    if (zone == NULL || zone->data) {
        return zone;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_webhook_lock_stat_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    if (ngx_array_init(&ctx->names, cf->pool, 8,
                       sizeof(ngx_http_webhook_lock_stat_name_t))
        != NGX_OK)
    {
        return NULL;
    }

    zone->init = ngx_http_webhook_lock_stat_init_zone;
    zone->data = ctx;

    return zone;
}


/*
 * A location is counted under a name; "slot" is set once the zone
 * exists, after the whole configuration was read.
 */

ngx_int_t
ngx_http_webhook_lock_stat_location(ngx_conf_t *cf, ngx_str_t *name,
    ngx_http_webhook_lock_stat_slot_t **slot)
{
    ngx_shm_zone_t                     *zone;
    ngx_http_webhook_lock_stat_ctx_t   *ctx;
    ngx_http_webhook_lock_stat_name_t  *n;

    zone = ngx_http_webhook_lock_stat_add_zone(cf);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    ctx = zone->data;

    n = ngx_array_push(&ctx->names);
    if (n == NULL) {
        return NGX_ERROR;
    }

    n->name = *name;
    n->slot = slot;

    return NGX_OK;
}


static ngx_int_t
ngx_http_webhook_lock_stat_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_http_webhook_lock_stat_ctx_t  *octx = data;

    ngx_uint_t                          i;
    ngx_slab_pool_t                    *shpool;
    ngx_http_webhook_lock_stat_ctx_t   *ctx;
    ngx_http_webhook_lock_stat_name_t  *n;

    ctx = zone->data;

    if (octx) {
        /* a reload: the counters go on where they were */
        ctx->sh = octx->sh;

    } else {
        shpool = (ngx_slab_pool_t *) zone->shm.addr;

        ctx->sh = ngx_slab_calloc(shpool,
                                  sizeof(ngx_http_webhook_lock_shm_t));
        if (ctx->sh == NULL) {
            return NGX_ERROR;
        }
    }

    n = ctx->names.elts;

    for (i = 0; i < ctx->names.nelts; i++) {
        *n[i].slot = ngx_http_webhook_lock_stat_slot(ctx->sh, &n[i].name);
    }

    ngx_http_webhook_lock_stat_shm = ctx->sh;

    return NGX_OK;
}


/* only the master runs this, while it reads the configuration */

static ngx_http_webhook_lock_stat_slot_t *
ngx_http_webhook_lock_stat_slot(ngx_http_webhook_lock_shm_t *sh,
    ngx_str_t *name)
{
    size_t                              len;
    ngx_uint_t                          i;
    ngx_http_webhook_lock_stat_slot_t  *slot;

    len = ngx_min(name->len, NGX_HTTP_WEBHOOK_LOCK_NAME_LEN);

    for (i = 0; i < sh->nslots; i++) {
        slot = &sh->slots[i];

        if (slot->len == len && ngx_strncmp(slot->name, name->data, len) == 0)
        {
            return slot;
        }
    }

    if (sh->nslots == NGX_HTTP_WEBHOOK_LOCK_SLOTS) {
        /* so many names: the last slot counts the rest */
        return &sh->slots[NGX_HTTP_WEBHOOK_LOCK_SLOTS - 1];
    }

    slot = &sh->slots[sh->nslots++];

    slot->len = len;
    ngx_memcpy(slot->name, name->data, len);

    return slot;
}


void
ngx_http_webhook_lock_stat_add(ngx_uint_t stat, ngx_atomic_int_t n)
{
    if (ngx_http_webhook_lock_stat_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_webhook_lock_stat_shm
                                        ->stats[stat], n);
    }
}


void
ngx_http_webhook_lock_stat_request(ngx_http_webhook_lock_stat_slot_t *slot,
    ngx_uint_t status)
{
    if (slot && status < NGX_HTTP_WEBHOOK_LOCK_STATUSES) {
        (void) ngx_atomic_fetch_add(&slot->requests[status], 1);
    }
}


void
ngx_http_webhook_lock_stat_observe(ngx_uint_t hist, ngx_msec_t ms)
{
    ngx_uint_t                     i;
    ngx_http_webhook_lock_hist_t  *h;

    if (ngx_http_webhook_lock_stat_shm == NULL) {
        return;
    }

    h = &ngx_http_webhook_lock_stat_shm->hists[hist];

    for (i = 0; i < NGX_HTTP_WEBHOOK_LOCK_BUCKETS; i++) {
        if (ms <= ngx_http_webhook_lock_stat_bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&h->buckets[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum, ms);
    (void) ngx_atomic_fetch_add(&h->count, 1);
}


char *
ngx_http_webhook_lock_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_http_webhook_lock_status_handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_http_webhook_lock_status_handler;

    if (ngx_http_webhook_lock_stat_zone(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_webhook_lock_status_handler(ngx_http_request_t *r)
{
    size_t                        size;
    ngx_int_t                     rc;
    ngx_buf_t                    *b;
    ngx_str_t                     format;
    ngx_uint_t                    json;
    ngx_chain_t                   out;
    ngx_http_webhook_lock_shm_t  *sh;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    sh = ngx_http_webhook_lock_stat_shm;

    if (sh == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    json = ngx_http_arg(r, (u_char *) "format", 6, &format) == NGX_OK
           && format.len == 4 && ngx_strncmp(format.data, "json", 4) == 0;

    /* names are escaped: at most twice as long, plus fixed text */

    size = 8192
           + sh->nslots * NGX_HTTP_WEBHOOK_LOCK_STATUSES
             * (2 * NGX_HTTP_WEBHOOK_LOCK_NAME_LEN + 128);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = json ? ngx_http_webhook_lock_status_json(b->last, sh)
                   : ngx_http_webhook_lock_status_text(b->last, sh);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    if (json) {
        ngx_str_set(&r->headers_out.content_type, "application/json");

    } else {
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* the Prometheus text exposition format */

static u_char *
ngx_http_webhook_lock_status_text(u_char *p, ngx_http_webhook_lock_shm_t *sh)
{
    ngx_uint_t                          i, j;
    ngx_atomic_uint_t                   n;
    ngx_http_webhook_lock_hist_t       *h;
    ngx_http_webhook_lock_stat_slot_t  *slot;

    p = ngx_sprintf(p, "# HELP webhook_lock_requests_total Webhooks by "
                       "location and what the gate did with them.\n"
                       "# TYPE webhook_lock_requests_total counter\n");

    for (i = 0; i < sh->nslots; i++) {
        slot = &sh->slots[i];

        for (j = 1; j < NGX_HTTP_WEBHOOK_LOCK_STATUSES; j++) {
            p = ngx_sprintf(p, "webhook_lock_requests_total{location=\"");
            p = ngx_http_webhook_lock_status_escape(p, slot);
            p = ngx_sprintf(p, "\",status=\"%V\"} %uA\n",
                            &ngx_http_webhook_lock_status_names[j],
                            slot->requests[j]);
        }
    }

    for (i = 0; i < NGX_HTTP_WEBHOOK_LOCK_STAT_N; i++) {
        p = ngx_sprintf(p, "# HELP %V %V\n# TYPE %V %V\n",
                        &ngx_http_webhook_lock_stat_meta[i].name,
                        &ngx_http_webhook_lock_stat_meta[i].help,
                        &ngx_http_webhook_lock_stat_meta[i].name,
                        &ngx_http_webhook_lock_stat_meta[i].type);

        /* gauges go down as well: shown signed */

        p = ngx_sprintf(p, "%V %A\n",
                        &ngx_http_webhook_lock_stat_meta[i].name,
                        (ngx_atomic_int_t) sh->stats[i]);
    }

    for (i = 0; i < NGX_HTTP_WEBHOOK_LOCK_HIST_N; i++) {
        h = &sh->hists[i];

        p = ngx_sprintf(p, "# HELP %V %V\n# TYPE %V histogram\n",
                        &ngx_http_webhook_lock_hist_meta[i].name,
                        &ngx_http_webhook_lock_hist_meta[i].help,
                        &ngx_http_webhook_lock_hist_meta[i].name);

        n = 0;

        for (j = 0; j < NGX_HTTP_WEBHOOK_LOCK_BUCKETS; j++) {
            n += h->buckets[j];
            p = ngx_sprintf(p, "%V_bucket{le=\"%M.%03M\"} %uA\n",
                            &ngx_http_webhook_lock_hist_meta[i].name,
                            ngx_http_webhook_lock_stat_bounds[j] / 1000,
                            ngx_http_webhook_lock_stat_bounds[j] % 1000, n);
        }

        n += h->buckets[j];

        p = ngx_sprintf(p, "%V_bucket{le=\"+Inf\"} %uA\n"
                           "%V_sum %uA.%03uA\n"
                           "%V_count %uA\n",
                        &ngx_http_webhook_lock_hist_meta[i].name, n,
                        &ngx_http_webhook_lock_hist_meta[i].name,
                        h->sum / 1000, h->sum % 1000,
                        &ngx_http_webhook_lock_hist_meta[i].name, h->count);
    }

    return p;
}


static u_char *
ngx_http_webhook_lock_status_json(u_char *p, ngx_http_webhook_lock_shm_t *sh)
{
    ngx_uint_t                          i, j;
    ngx_atomic_uint_t                   n;
    ngx_http_webhook_lock_hist_t       *h;
    ngx_http_webhook_lock_stat_slot_t  *slot;

    p = ngx_sprintf(p, "{\"requests\":{");

    for (i = 0; i < sh->nslots; i++) {
        slot = &sh->slots[i];

        p = ngx_sprintf(p, "%s\"", i ? "," : "");
        p = (u_char *) ngx_escape_json(p, slot->name, slot->len);
        p = ngx_sprintf(p, "\":{");

        for (j = 1; j < NGX_HTTP_WEBHOOK_LOCK_STATUSES; j++) {
            p = ngx_sprintf(p, "%s\"%V\":%uA", j > 1 ? "," : "",
                            &ngx_http_webhook_lock_status_names[j],
                            slot->requests[j]);
        }

        *p++ = '}';
    }

    p = ngx_sprintf(p, "}");

    for (i = 0; i < NGX_HTTP_WEBHOOK_LOCK_STAT_N; i++) {
        p = ngx_sprintf(p, ",\"%V\":%A",
                        &ngx_http_webhook_lock_stat_meta[i].name,
                        (ngx_atomic_int_t) sh->stats[i]);
    }

    for (i = 0; i < NGX_HTTP_WEBHOOK_LOCK_HIST_N; i++) {
        h = &sh->hists[i];

        p = ngx_sprintf(p, ",\"%V\":{\"buckets\":{",
                        &ngx_http_webhook_lock_hist_meta[i].name);

        n = 0;

        for (j = 0; j < NGX_HTTP_WEBHOOK_LOCK_BUCKETS; j++) {
            n += h->buckets[j];
            p = ngx_sprintf(p, "\"%M.%03M\":%uA,",
                            ngx_http_webhook_lock_stat_bounds[j] / 1000,
                            ngx_http_webhook_lock_stat_bounds[j] % 1000, n);
        }

        n += h->buckets[j];

        p = ngx_sprintf(p, "\"+Inf\":%uA},\"sum\":%uA.%03uA,\"count\":%uA}",
                        n, h->sum / 1000, h->sum % 1000, h->count);
    }

    *p++ = '}';
    *p++ = '\n';

    return p;
}


/* a label value: backslash, double quote and newline escaped */

static u_char *
ngx_http_webhook_lock_status_escape(u_char *p,
    ngx_http_webhook_lock_stat_slot_t *slot)
{
    u_char  *s, *last;

    last = slot->name + slot->len;

    for (s = slot->name; s < last; s++) {
        if (*s == '\\' || *s == '"') {
            *p++ = '\\';
            *p++ = *s;

        } else if (*s == '\n') {
            *p++ = '\\';
            *p++ = 'n';

        } else {
            *p++ = *s;
        }
    }

    return p;
}
