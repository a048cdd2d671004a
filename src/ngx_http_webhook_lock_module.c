
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_webhook_lock_module.h"
#include "ngx_http_webhook_lock_payload.h"
#include "ngx_http_webhook_lock_signature.h"


#define NGX_HTTP_WEBHOOK_LOCK_DEFAULT_KEY                                    \
    "webhook:{$webhook_inbox}:$webhook_sender"


static ngx_int_t ngx_http_webhook_lock_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_webhook_lock_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_webhook_lock_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_webhook_lock_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_webhook_lock_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_webhook_lock_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_webhook_lock_merge_signature(ngx_conf_t *cf,
    ngx_http_webhook_lock_loc_conf_t *prev,
    ngx_http_webhook_lock_loc_conf_t *conf);
static char *ngx_http_webhook_lock_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_webhook_lock_paths(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_webhook_lock_form_paths(ngx_conf_t *cf,
    ngx_array_t *paths);
static char *ngx_http_webhook_lock_retry_after(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_webhook_lock_dedup(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_webhook_lock_signature(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_webhook_lock_init_process(ngx_cycle_t *cycle);
static void ngx_http_webhook_lock_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_http_webhook_lock_queue_bounds = {
    ngx_conf_check_num_bounds, 1, 1000
};


static ngx_conf_enum_t  ngx_http_webhook_lock_fail[] = {
    { ngx_string("closed"), 0 },
    { ngx_string("open"), 1 },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_webhook_lock_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_webhook_lock_commands[] = {

    { ngx_string("webhook_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_webhook_lock_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("webhook_lock"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, rules.format),
      &ngx_http_webhook_lock_formats },

    { ngx_string("webhook_sender"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_webhook_lock_paths,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, rules.senders),
      NULL },

    { ngx_string("webhook_message_id"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_webhook_lock_paths,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, rules.message_ids),
      NULL },

    { ngx_string("webhook_inbox"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_webhook_lock_paths,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, rules.inboxes),
      NULL },

    { ngx_string("webhook_lock_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, key),
      NULL },

    { ngx_string("webhook_lock_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, ttl),
      NULL },

    { ngx_string("webhook_lock_hold"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, hold),
      NULL },

    { ngx_string("webhook_dedup"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_webhook_lock_dedup,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, dedup),
      NULL },

    { ngx_string("webhook_lock_wait"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, wait),
      NULL },

    { ngx_string("webhook_lock_queue"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, queue),
      &ngx_http_webhook_lock_queue_bounds },

    { ngx_string("webhook_retry_after"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_webhook_lock_retry_after,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, retry_after),
      NULL },

    { ngx_string("webhook_signature"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_webhook_lock_signature,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("webhook_signature_url"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, signature_url),
      NULL },

    { ngx_string("webhook_redis_fail"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, fail_open),
      &ngx_http_webhook_lock_fail },

    { ngx_string("webhook_lock_name"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, name),
      NULL },

    { ngx_string("webhook_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_webhook_lock_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("webhook_lock_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_webhook_lock_loc_conf_t, log_level),
      &ngx_http_webhook_lock_log_levels },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_webhook_lock_module_ctx = {
    ngx_http_webhook_lock_preconfiguration,  /* preconfiguration */
    ngx_http_webhook_lock_postconfiguration, /* postconfiguration */

    ngx_http_webhook_lock_create_main_conf,  /* create main configuration */
    ngx_http_webhook_lock_init_main_conf,    /* init main configuration */

    NULL,                                    /* create server configuration */
    NULL,                                    /* merge server configuration */

    ngx_http_webhook_lock_create_loc_conf,   /* create location configuration */
    ngx_http_webhook_lock_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_webhook_lock_module = {
    NGX_MODULE_V1,
    &ngx_http_webhook_lock_module_ctx,       /* module context */
    ngx_http_webhook_lock_commands,          /* module directives */
    NGX_HTTP_MODULE,                         /* module type */
    NULL,                                    /* init master */
    NULL,                                    /* init module */
    ngx_http_webhook_lock_init_process,      /* init process */
    NULL,                                    /* init thread */
    NULL,                                    /* exit thread */
    ngx_http_webhook_lock_exit_process,      /* exit process */
    NULL,                                    /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_webhook_lock_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_webhook_lock_add_variables(cf);
}


static ngx_int_t
ngx_http_webhook_lock_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt                *h;
    ngx_http_core_main_conf_t          *cmcf;
    ngx_http_webhook_lock_main_conf_t  *wmcf;

    /* locations are merged by now: wmcf->enabled is known */

    wmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_webhook_lock_module);

    if (wmcf->enabled && wmcf->redis.name.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"webhook_lock\" needs a \"webhook_redis\" "
                      "in the http block");
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_webhook_lock_handler;

    return NGX_OK;
}


static void *
ngx_http_webhook_lock_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_webhook_lock_main_conf_t  *wmcf;

    wmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_webhook_lock_main_conf_t));
    if (wmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     wmcf->redis.name = { 0, NULL };
     *     wmcf->redis.server = { ... };
     *     wmcf->redis.user = { 0, NULL };
     *     wmcf->redis.password = { 0, NULL };
     *     wmcf->redis.sentinels = NULL;
     *     wmcf->redis.resolver = NULL;
     *     wmcf->redis.tls = 0;
     *     wmcf->redis.dedup = 0;
     *     wmcf->redis.queue = 0;
     *     wmcf->enabled = 0;
     */

    ngx_http_webhook_lock_redis_conf_create(&wmcf->redis);

    return wmcf;
}


static char *
ngx_http_webhook_lock_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_webhook_lock_main_conf_t *wmcf = conf;

    return ngx_http_webhook_lock_redis_conf_init(cf, &wmcf->redis);
}


static void *
ngx_http_webhook_lock_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_webhook_lock_loc_conf_t  *wlcf;

    wlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_webhook_lock_loc_conf_t));
    if (wlcf == NULL) {
        return NULL;
    }

    wlcf->rules.format = NGX_CONF_UNSET_UINT;
    wlcf->rules.senders = NGX_CONF_UNSET_PTR;
    wlcf->rules.message_ids = NGX_CONF_UNSET_PTR;
    wlcf->rules.inboxes = NGX_CONF_UNSET_PTR;
    wlcf->key = NGX_CONF_UNSET_PTR;
    wlcf->signature = NGX_CONF_UNSET_PTR;
    wlcf->signature_url = NGX_CONF_UNSET_PTR;
    wlcf->ttl = NGX_CONF_UNSET_MSEC;
    wlcf->hold = NGX_CONF_UNSET_MSEC;
    wlcf->dedup = NGX_CONF_UNSET_MSEC;
    wlcf->wait = NGX_CONF_UNSET_MSEC;
    wlcf->queue = NGX_CONF_UNSET;
    wlcf->retry_after = NGX_CONF_UNSET;
    wlcf->fail_open = NGX_CONF_UNSET_UINT;
    wlcf->log_level = NGX_CONF_UNSET_UINT;

    return wlcf;
}


static char *
ngx_http_webhook_lock_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_webhook_lock_loc_conf_t *prev = parent;
    ngx_http_webhook_lock_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_webhook_lock_main_conf_t  *wmcf;
    ngx_http_compile_complex_value_t    ccv;
    ngx_str_t                           key = ngx_string(
                                            NGX_HTTP_WEBHOOK_LOCK_DEFAULT_KEY);

    ngx_conf_merge_uint_value(conf->rules.format, prev->rules.format,
                              NGX_HTTP_WEBHOOK_LOCK_OFF);
    ngx_conf_merge_ptr_value(conf->rules.senders, prev->rules.senders, NULL);
    ngx_conf_merge_ptr_value(conf->rules.message_ids,
                             prev->rules.message_ids, NULL);
    ngx_conf_merge_ptr_value(conf->rules.inboxes, prev->rules.inboxes, NULL);
    ngx_conf_merge_msec_value(conf->ttl, prev->ttl, 30000);
    ngx_conf_merge_msec_value(conf->hold, prev->hold, 0);
    ngx_conf_merge_msec_value(conf->dedup, prev->dedup, 0);
    ngx_conf_merge_msec_value(conf->wait, prev->wait, 0);
    ngx_conf_merge_value(conf->queue, prev->queue, 50);
    ngx_conf_merge_value(conf->retry_after, prev->retry_after, 1);
    ngx_conf_merge_uint_value(conf->fail_open, prev->fail_open, 0);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_ERR);
    ngx_conf_merge_str_value(conf->name, prev->name, "");

    if (conf->key == NGX_CONF_UNSET_PTR) {

        if (prev->key == NGX_CONF_UNSET_PTR) {
            /* compiled once, in the http block, and inherited from there */

            prev->key = ngx_palloc(cf->pool,
                                   sizeof(ngx_http_complex_value_t));
            if (prev->key == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &key;
            ccv.complex_value = prev->key;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }
        }

        conf->key = prev->key;
    }

    if (conf->ttl == 0) {
        return "has \"webhook_lock_ttl\" of zero";
    }

    if (conf->hold >= conf->ttl) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"webhook_lock_hold\" must be shorter than "
                           "\"webhook_lock_ttl\"");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_webhook_lock_merge_signature(cf, prev, conf) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (conf->rules.format == NGX_HTTP_WEBHOOK_LOCK_OFF) {
        return NGX_CONF_OK;
    }

    if (conf->rules.format == NGX_HTTP_WEBHOOK_LOCK_TWILIO
        && (ngx_http_webhook_lock_form_paths(cf, conf->rules.senders)
            != NGX_OK
            || ngx_http_webhook_lock_form_paths(cf, conf->rules.message_ids)
               != NGX_OK
            || ngx_http_webhook_lock_form_paths(cf, conf->rules.inboxes)
               != NGX_OK))
    {
        return NGX_CONF_ERROR;
    }

    if (conf->rules.format == NGX_HTTP_WEBHOOK_LOCK_JSON
        && conf->rules.senders == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"webhook_lock json\" needs \"webhook_sender\"");
        return NGX_CONF_ERROR;
    }

    wmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_webhook_lock_module);
    wmcf->enabled = 1;

    if (conf->dedup) {
        /* the dedup scripts are loaded on connect only when used */
        wmcf->redis.dedup = 1;
    }

    if (conf->wait) {
        /* so are the queue script and the subscriber */
        wmcf->redis.queue = 1;
    }

    /* counted in webhook_status under its name, else the location's */

    if (conf->name.len == 0) {
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->name.len) {
            conf->name = clcf->name;

        } else {
            ngx_str_set(&conf->name, "server");
        }
    }

    if (ngx_http_webhook_lock_stat_location(cf, &conf->name, &conf->stat)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_webhook_lock_merge_signature(ngx_conf_t *cf,
    ngx_http_webhook_lock_loc_conf_t *prev,
    ngx_http_webhook_lock_loc_conf_t *conf)
{
    ngx_str_t                          url;
    ngx_http_compile_complex_value_t   ccv;

    ngx_str_set(&url, NGX_HTTP_WEBHOOK_LOCK_SIGNATURE_URL);

    ngx_conf_merge_ptr_value(conf->signature, prev->signature, NULL);

    if (conf->signature_url == NGX_CONF_UNSET_PTR) {

        if (prev->signature_url == NGX_CONF_UNSET_PTR) {
            /* compiled once, in the http block, and inherited from there */

            prev->signature_url = ngx_palloc(cf->pool,
                                             sizeof(ngx_http_complex_value_t));
            if (prev->signature_url == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &url;
            ccv.complex_value = prev->signature_url;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }
        }

        conf->signature_url = prev->signature_url;
    }

    if (conf->signature && conf->rules.format == NGX_HTTP_WEBHOOK_LOCK_JSON) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"webhook_lock json\" has no signature scheme: "
                           "use \"webhook_signature off\" there");
        return NGX_CONF_ERROR;
    }

    if (conf->signature && conf->rules.format == NGX_HTTP_WEBHOOK_LOCK_SMS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"webhook_lock sms\" has no signature scheme: "
                           "Bandwidth authenticates with HTTP basic "
                           "authentication, use \"auth_basic\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_webhook_lock_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_webhook_lock_main_conf_t *wmcf = conf;

    return ngx_http_webhook_lock_redis_conf_parse(cf, &wmcf->redis);
}


static char *
ngx_http_webhook_lock_paths(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    char                           *rv;
    ngx_str_t                      *value;
    ngx_uint_t                      i;
    ngx_array_t                   **paths;
    ngx_http_webhook_lock_path_t  **path;

    paths = (ngx_array_t **) (p + cmd->offset);

    if (*paths != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    *paths = ngx_array_create(cf->pool, cf->args->nelts - 1,
                              sizeof(ngx_http_webhook_lock_path_t *));
    if (*paths == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        path = ngx_array_push(*paths);
        if (path == NULL) {
            return NGX_CONF_ERROR;
        }

        rv = ngx_http_webhook_lock_path_compile(cf, &value[i], path);
        if (rv != NGX_CONF_OK) {
            if (rv != NGX_CONF_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", rv);
            }

            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* a form body has fields, not trees: each path must be a plain name */

static ngx_int_t
ngx_http_webhook_lock_form_paths(ngx_conf_t *cf, ngx_array_t *paths)
{
    ngx_uint_t                      i;
    ngx_http_webhook_lock_path_t  **path;

    if (paths == NULL) {
        return NGX_OK;
    }

    path = paths->elts;

    for (i = 0; i < paths->nelts; i++) {
        if (ngx_http_webhook_lock_path_name(path[i]) == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" is not a form field name, "
                               "as \"webhook_lock twilio\" needs",
                               &path[i]->text);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static char *
ngx_http_webhook_lock_retry_after(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char  *p = conf;

    time_t     *sp;
    ngx_str_t  *value;

    sp = (time_t *) (p + cmd->offset);

    if (*sp != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* seconds, as the header carries them; "2s" reads as well */

    *sp = ngx_parse_time(&value[1], 1);
    if (*sp == (time_t) NGX_ERROR) {
        return "invalid value";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_webhook_lock_dedup(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t   *value;
    ngx_msec_t  *mp;

    mp = (ngx_msec_t *) (p + cmd->offset);

    if (*mp != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        *mp = 0;
        return NGX_CONF_OK;
    }

    *mp = ngx_parse_time(&value[1], 0);
    if (*mp == (ngx_msec_t) NGX_ERROR || *mp == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Secrets are complex values; a request is accepted when any one of them
 * verifies its signature, so that a secret can be rotated.  Never echoed.
 */

static char *
ngx_http_webhook_lock_signature(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_webhook_lock_loc_conf_t *wlcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_complex_value_t          *cv;
    ngx_http_compile_complex_value_t   ccv;

    if (wlcf->signature != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        wlcf->signature = NULL;
        return NGX_CONF_OK;
    }

    wlcf->signature = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                       sizeof(ngx_http_complex_value_t));
    if (wlcf->signature == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 0) {
            return "has an empty secret";
        }

        if (ngx_strcmp(value[i].data, "off") == 0) {
            return "has \"off\" among secrets";
        }

        cv = ngx_array_push(wlcf->signature);
        if (cv == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &value[i];
        ccv.complex_value = cv;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_webhook_lock_init_process(ngx_cycle_t *cycle)
{
    ngx_http_webhook_lock_main_conf_t  *wmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    wmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_webhook_lock_module);
    if (wmcf == NULL || !wmcf->enabled) {
        return NGX_OK;
    }

    return ngx_http_webhook_lock_redis_init_process(cycle, &wmcf->redis);
}


static void
ngx_http_webhook_lock_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_webhook_lock_redis_exit_process(cycle);
}
