
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_HTTP_WEBHOOK_LOCK_PAYLOAD_H_INCLUDED_
#define _NGX_HTTP_WEBHOOK_LOCK_PAYLOAD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <cjson/cJSON.h>


#define NGX_HTTP_WEBHOOK_LOCK_PATH_ALL     (-1)    /* "[*]" */
#define NGX_HTTP_WEBHOOK_LOCK_PATH_MAX     64      /* segments in a PATH */
#define NGX_HTTP_WEBHOOK_LOCK_JSON_DEPTH   64      /* nesting of a body */

/* room for any number as text: "-2.2250738585072014e-308" */
#define NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN   32

#define NGX_HTTP_WEBHOOK_LOCK_DETAIL_LEN   128

/* bytes between the quotes from which the module decodes a string */
#define NGX_HTTP_WEBHOOK_LOCK_JSON_LONG    256


typedef struct ngx_http_webhook_lock_path_s  ngx_http_webhook_lock_path_t;


/* what a location looks for in a body */

typedef struct {
    ngx_uint_t     format;
    ngx_array_t   *senders;        /* of ngx_http_webhook_lock_path_t *  */
    ngx_array_t   *message_ids;    /* NULL: the format's own rules       */
    ngx_array_t   *inboxes;
} ngx_http_webhook_lock_rules_t;


/* what it found */

typedef struct {
    ngx_str_t      inbox;          /* len == 0: the body names none      */
    ngx_array_t    senders;        /* of ngx_str_t, distinct, body order */
    ngx_array_t    message_ids;    /* of ngx_str_t, distinct, body order */
} ngx_http_webhook_lock_payload_t;


/* a name is NUL-terminated, for cJSON_GetObjectItemCaseSensitive() */

typedef struct {
    ngx_str_t                          name;      /* len == 0: an index */
    ngx_int_t                          index;     /* N or _PATH_ALL */
} ngx_http_webhook_lock_segment_t;


struct ngx_http_webhook_lock_path_s {
    ngx_str_t                          text;      /* as configured */
    ngx_http_webhook_lock_segment_t   *segments;
    ngx_uint_t                         nsegments;
};


/*
 * Called for each value a path reaches, with "value" pointing into the
 * tree or into a temporary buffer: copy it to keep it.  NGX_OK goes on,
 * NGX_DONE stops the walk with success, anything else stops it and is
 * returned by the walk.
 */
typedef ngx_int_t (*ngx_http_webhook_lock_value_pt)(void *data,
    ngx_str_t *value);


/*
 * A long string of a body, which ngx_http_webhook_lock_json_parse()
 * decodes itself rather than through cJSON.
 */

typedef struct {
    u_char                            *start;     /* the opening quote */
    u_char                            *end;       /* past the closing one */
    u_char                            *copy;      /* its stand-in in the
                                                     copy cJSON parses */
    u_char                            *value;     /* decoded, with a NUL */
} ngx_http_webhook_lock_string_t;


/*
 * PATH: dot-separated names, "[N]" for an index, "[*]" for every element,
 * a leading "[*]" or "[N]" for a top-level array:
 * "entry[*].changes[*].value.messages[*].from", "[*].message.from".
 * Allocates from cf->pool.  Returns NGX_CONF_OK, NGX_CONF_ERROR when out
 * of memory, or a NUL-terminated message for ngx_conf_log_error() (or to
 * return from a directive handler), e.g.
 * "invalid path \"a..b\": empty name at offset 2".
 */
char *ngx_http_webhook_lock_path_compile(ngx_conf_t *cf, ngx_str_t *text,
    ngx_http_webhook_lock_path_t **path);

/* the name when the path is a single name (a form field), else NULL */
ngx_str_t *ngx_http_webhook_lock_path_name(ngx_http_webhook_lock_path_t *path);

/*
 * Calls "handler" for every non-empty string and every number the path
 * reaches, in document order; other values are skipped.
 */
ngx_int_t ngx_http_webhook_lock_path_walk(ngx_http_webhook_lock_path_t *path,
    cJSON *root, ngx_http_webhook_lock_value_pt handler, void *data);

/*
 * Parses a whole body as JSON: strict UTF-8, no NUL bytes, nothing but
 * white space after the value, bounded nesting.  NULL with "detail" set
 * when it is not valid, NULL with an empty "detail" when out of memory.
 * The tree, long strings decoded by the module included, is allocated
 * from the pool.
 */
cJSON *ngx_http_webhook_lock_json_parse(ngx_pool_t *pool, u_char *body,
    size_t len, ngx_str_t *detail);

/*
 * The checks of ngx_http_webhook_lock_json_parse() that cJSON does not
 * make, before it runs: strict UTF-8, no NUL byte, bounded nesting.
 * NGX_OK, or NGX_DECLINED with "detail" (NGX_ERROR, empty, on memory).
 * Unless NULL, "strings" (zeroed) gets the strings it finds of
 * ngx_http_webhook_lock_json_long bytes or more, start and end set
 * (ngx_http_webhook_lock_string_t).
 */
ngx_int_t ngx_http_webhook_lock_json_scan(ngx_pool_t *pool, u_char *body,
    size_t len, ngx_array_t *strings, ngx_str_t *detail);

/* NGX_HTTP_WEBHOOK_LOCK_JSON_LONG, at least 1; lowered by the fuzz targets */
extern size_t  ngx_http_webhook_lock_json_long;

/*
 * A non-empty string as it is, or a number as decimal text (written to
 * "buf", NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN bytes): 1; anything else: 0.
 */
ngx_uint_t ngx_http_webhook_lock_json_value(cJSON *item, u_char *buf,
    ngx_str_t *value);

/*
 * application/x-www-form-urlencoded: fills "fields" (ngx_keyval_t,
 * percent- and plus-decoded, in body order, copied to the pool).  The
 * function initializes "fields" itself.  Pairs without "=" have an empty
 * value, empty pairs ("a=1&&b=2") are skipped.  NGX_DECLINED with
 * "detail" on a malformed body (empty, a bad escape, a NUL byte or
 * invalid UTF-8 once decoded), NGX_ERROR when out of memory.
 */
ngx_int_t ngx_http_webhook_lock_form_parse(ngx_pool_t *pool, u_char *body,
    size_t len, ngx_array_t *fields, ngx_str_t *detail);

/* the first field of that name, or NULL */
ngx_str_t *ngx_http_webhook_lock_form_get(ngx_array_t *fields,
    const char *name);

/*
 * Formats "detail" (at most NGX_HTTP_WEBHOOK_LOCK_DETAIL_LEN bytes) in
 * the pool: NGX_DECLINED, or NGX_ERROR with an empty "detail" when out
 * of memory.
 */
ngx_int_t ngx_cdecl ngx_http_webhook_lock_detail(ngx_pool_t *pool,
    ngx_str_t *detail, const char *fmt, ...);


#endif /* _NGX_HTTP_WEBHOOK_LOCK_PAYLOAD_H_INCLUDED_ */
