
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <cjson/cJSON.h>

#include "ngx_http_webhook_lock_payload.h"


/* JSON white space, RFC 8259 */
#define ngx_http_webhook_lock_json_space(c)                                  \
    ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')

/* 2^53: every integer below it is exact in a double */
#define NGX_HTTP_WEBHOOK_LOCK_EXACT_MAX  9007199254740992.0


static char *ngx_http_webhook_lock_path_error(ngx_conf_t *cf, ngx_str_t *text,
    char *err, u_char *pos);
static ngx_int_t ngx_http_webhook_lock_path_step(
    ngx_http_webhook_lock_path_t *path, ngx_uint_t i, cJSON *node,
    ngx_http_webhook_lock_value_pt handler, void *data);
static size_t ngx_http_webhook_lock_utf8_char(u_char *p, u_char *last);
static ngx_int_t ngx_http_webhook_lock_json_scan(ngx_pool_t *pool,
    u_char *body, size_t len, ngx_str_t *detail);
static void *ngx_http_webhook_lock_json_alloc(size_t size);
static void ngx_http_webhook_lock_json_free(void *p);
static ngx_int_t ngx_http_webhook_lock_form_decode(ngx_pool_t *pool,
    u_char *body, u_char *start, u_char *end, ngx_str_t *out,
    ngx_str_t *detail);
static ngx_int_t ngx_http_webhook_lock_hex(u_char c);


/* the pool cJSON allocates from while it parses; one worker, one thread */
static ngx_pool_t  *ngx_http_webhook_lock_json_pool;


char *
ngx_http_webhook_lock_path_compile(ngx_conf_t *cf, ngx_str_t *text,
    ngx_http_webhook_lock_path_t **path)
{
    char                             *err;
    u_char                           *p, *q, *last;
    ngx_int_t                         n;
    ngx_array_t                       segments;
    ngx_http_webhook_lock_path_t     *pt;
    ngx_http_webhook_lock_segment_t  *seg;

    if (text->len == 0) {
        return ngx_http_webhook_lock_path_error(cf, text, "empty path", NULL);
    }

    if (ngx_array_init(&segments, cf->pool, 4,
                       sizeof(ngx_http_webhook_lock_segment_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    p = text->data;
    last = p + text->len;

    for ( ;; ) {

        /* p < last, at the start of a segment */

        if (segments.nelts == NGX_HTTP_WEBHOOK_LOCK_PATH_MAX) {
            return ngx_http_webhook_lock_path_error(cf, text,
                                                    "too many segments", p);
        }

        seg = ngx_array_push(&segments);
        if (seg == NULL) {
            return NGX_CONF_ERROR;
        }

        if (*p == '[') {

            for (q = p + 1; q < last && *q != ']'; q++) { /* void */ }

            if (q == last) {
                return ngx_http_webhook_lock_path_error(cf, text,
                                                        "unclosed \"[\"", p);
            }

            if (q == p + 1) {
                return ngx_http_webhook_lock_path_error(cf, text,
                                                        "empty index", q);
            }

            ngx_str_null(&seg->name);

            if (q == p + 2 && p[1] == '*') {
                seg->index = NGX_HTTP_WEBHOOK_LOCK_PATH_ALL;

            } else {
                n = ngx_atoi(p + 1, q - p - 1);

                if (n == NGX_ERROR || n > NGX_MAX_INT32_VALUE) {
                    return ngx_http_webhook_lock_path_error(cf, text,
                                                            "invalid index",
                                                            p + 1);
                }

                seg->index = n;
            }

            p = q + 1;

        } else {

            for (q = p;
                 q < last && *q != '.' && *q != '[' && *q != ']';
                 q++)
            {
                /* void */
            }

            if (q == p) {
                err = (*p == ']') ? "unbalanced \"]\"" : "empty name";
                return ngx_http_webhook_lock_path_error(cf, text, err, p);
            }

            seg->name.len = q - p;
            seg->name.data = ngx_pnalloc(cf->pool, seg->name.len + 1);
            if (seg->name.data == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memcpy(seg->name.data, p, seg->name.len);
            seg->name.data[seg->name.len] = '\0';
            seg->index = 0;

            p = q;
        }

        if (p == last) {
            break;
        }

        if (*p == '.') {
            p++;

            if (p == last || *p == '.' || *p == '[' || *p == ']') {
                return ngx_http_webhook_lock_path_error(cf, text,
                                                        "empty name", p);
            }

            continue;
        }

        if (*p == '[') {
            continue;
        }

        if (*p == ']') {
            return ngx_http_webhook_lock_path_error(cf, text,
                                                    "unbalanced \"]\"", p);
        }

        return ngx_http_webhook_lock_path_error(cf, text,
                                                "expected \".\" or \"[\"", p);
    }

    pt = ngx_palloc(cf->pool, sizeof(ngx_http_webhook_lock_path_t));
    if (pt == NULL) {
        return NGX_CONF_ERROR;
    }

    pt->text.len = text->len;
    pt->text.data = ngx_pstrdup(cf->pool, text);
    if (pt->text.data == NULL) {
        return NGX_CONF_ERROR;
    }

    pt->segments = segments.elts;
    pt->nsegments = segments.nelts;

    *path = pt;

    return NGX_CONF_OK;
}


static char *
ngx_http_webhook_lock_path_error(ngx_conf_t *cf, ngx_str_t *text, char *err,
    u_char *pos)
{
    u_char  *msg, *last;
    size_t   len;

    len = sizeof("invalid path \"\": ") - 1 + text->len + ngx_strlen(err)
          + sizeof(" at offset ") - 1 + NGX_SIZE_T_LEN + 1;

    msg = ngx_pnalloc(cf->pool, len);
    if (msg == NULL) {
        return NGX_CONF_ERROR;
    }

    if (pos == NULL) {
        last = ngx_snprintf(msg, len - 1, "invalid path \"%V\": %s",
                            text, err);

    } else {
        last = ngx_snprintf(msg, len - 1,
                            "invalid path \"%V\": %s at offset %uz",
                            text, err, (size_t) (pos - text->data));
    }

    *last = '\0';

    return (char *) msg;
}


ngx_str_t *
ngx_http_webhook_lock_path_name(ngx_http_webhook_lock_path_t *path)
{
    if (path->nsegments == 1 && path->segments[0].name.len) {
        return &path->segments[0].name;
    }

    return NULL;
}


ngx_int_t
ngx_http_webhook_lock_path_walk(ngx_http_webhook_lock_path_t *path,
    cJSON *root, ngx_http_webhook_lock_value_pt handler, void *data)
{
    ngx_int_t  rc;

    rc = ngx_http_webhook_lock_path_step(path, 0, root, handler, data);

    return (rc == NGX_DONE) ? NGX_OK : rc;
}


/* recursion is bounded by NGX_HTTP_WEBHOOK_LOCK_PATH_MAX */

static ngx_int_t
ngx_http_webhook_lock_path_step(ngx_http_webhook_lock_path_t *path,
    ngx_uint_t i, cJSON *node, ngx_http_webhook_lock_value_pt handler,
    void *data)
{
    cJSON                            *child;
    u_char                            buf[NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN];
    ngx_int_t                         rc, n;
    ngx_str_t                         value;
    ngx_http_webhook_lock_segment_t  *seg;

    if (i == path->nsegments) {

        if (!ngx_http_webhook_lock_json_value(node, buf, &value)) {
            return NGX_OK;
        }

        return handler(data, &value);
    }

    seg = &path->segments[i];

    if (seg->name.len) {

        if (!cJSON_IsObject(node)) {
            return NGX_OK;
        }

        child = cJSON_GetObjectItemCaseSensitive(node,
                                                 (char *) seg->name.data);
        if (child == NULL) {
            return NGX_OK;
        }

        return ngx_http_webhook_lock_path_step(path, i + 1, child, handler,
                                               data);
    }

    if (!cJSON_IsArray(node)) {
        return NGX_OK;
    }

    if (seg->index == NGX_HTTP_WEBHOOK_LOCK_PATH_ALL) {

        for (child = node->child; child; child = child->next) {
            rc = ngx_http_webhook_lock_path_step(path, i + 1, child, handler,
                                                 data);
            if (rc != NGX_OK) {
                return rc;
            }
        }

        return NGX_OK;
    }

    for (child = node->child, n = seg->index; child && n; child = child->next)
    {
        n--;
    }

    if (child == NULL) {
        return NGX_OK;
    }

    return ngx_http_webhook_lock_path_step(path, i + 1, child, handler, data);
}


ngx_uint_t
ngx_http_webhook_lock_json_value(cJSON *item, u_char *buf, ngx_str_t *value)
{
    double  d;

    if (cJSON_IsString(item)) {

        if (item->valuestring == NULL || item->valuestring[0] == '\0') {
            return 0;
        }

        value->data = (u_char *) item->valuestring;
        value->len = ngx_strlen(value->data);

        return 1;
    }

    if (!cJSON_IsNumber(item)) {
        return 0;
    }

    d = item->valuedouble;

    if (d > -NGX_HTTP_WEBHOOK_LOCK_EXACT_MAX
        && d < NGX_HTTP_WEBHOOK_LOCK_EXACT_MAX
        && d == (double) (int64_t) d)
    {
        value->len = ngx_sprintf(buf, "%L", (int64_t) d) - buf;

    } else {
        value->len = snprintf((char *) buf, NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN,
                              "%.17g", d);
    }

    value->data = buf;

    return 1;
}


cJSON *
ngx_http_webhook_lock_json_parse(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_str_t *detail)
{
    cJSON        *root;
    u_char       *p, *last;
    const char   *end;
    cJSON_Hooks   hooks;

    ngx_str_null(detail);

    if (len == 0) {
        ngx_str_set(detail, "empty body");
        return NULL;
    }

    last = body + len;

    for (p = body; p < last && ngx_http_webhook_lock_json_space(*p); p++) {
        /* void */
    }

    if (p == last) {
        ngx_str_set(detail, "empty body");
        return NULL;
    }

    if (ngx_http_webhook_lock_json_scan(pool, body, len, detail) != NGX_OK) {
        return NULL;
    }

    /*
     * cJSON before 1.7.18 reads a byte past a buffer that ends right
     * after a "," in an object (CVE-2023-53154); no valid text ends with
     * "," or "{" anyway.
     */

    for (p = last - 1; ngx_http_webhook_lock_json_space(*p); p--) {
        /* void */
    }

    if (*p == '{' || *p == ',') {
        (void) ngx_http_webhook_lock_detail(pool, detail,
                                            "malformed JSON near byte %uz",
                                            (size_t) (p - body));
        return NULL;
    }

    /*
     * The tree is allocated from the request's pool, and goes with it:
     * no malloc() and free() per node, nothing to free on any path.
     */

    hooks.malloc_fn = ngx_http_webhook_lock_json_alloc;
    hooks.free_fn = ngx_http_webhook_lock_json_free;

    ngx_http_webhook_lock_json_pool = pool;
    cJSON_InitHooks(&hooks);

    end = NULL;

    root = cJSON_ParseWithLengthOpts((const char *) body, len, &end, 0);

    cJSON_InitHooks(NULL);
    ngx_http_webhook_lock_json_pool = NULL;

    if (root == NULL) {
        p = end ? (u_char *) end : body;

        (void) ngx_http_webhook_lock_detail(pool, detail,
                                            "malformed JSON near byte %uz",
                                            (size_t) (p - body));
        return NULL;
    }

    for (p = (u_char *) end;
         p < last && ngx_http_webhook_lock_json_space(*p);
         p++)
    {
        /* void */
    }

    if (p < last) {
        (void) ngx_http_webhook_lock_detail(pool, detail,
                                            "trailing data at byte %uz",
                                            (size_t) (p - body));
        return NULL;
    }

    return root;
}


/*
 * One pass before cJSON sees the body: strict UTF-8 (no overlong forms,
 * no surrogates, nothing above U+10FFFF), no NUL byte, and nesting no
 * deeper than NGX_HTTP_WEBHOOK_LOCK_JSON_DEPTH, which bounds cJSON's
 * recursion.  Brackets inside strings do not count.
 */

static ngx_int_t
ngx_http_webhook_lock_json_scan(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_str_t *detail)
{
    u_char      *p, *last;
    size_t       n;
    ngx_uint_t   depth, string, escape;

    depth = 0;
    string = 0;
    escape = 0;

    last = body + len;

    for (p = body; p < last; p += n) {

        if (*p == '\0') {
            return ngx_http_webhook_lock_detail(pool, detail,
                                                "NUL byte at byte %uz",
                                                (size_t) (p - body));
        }

        if (*p >= 0x80) {
            n = ngx_http_webhook_lock_utf8_char(p, last);

            if (n == 0) {
                return ngx_http_webhook_lock_detail(pool, detail,
                                                    "invalid UTF-8 at byte %uz",
                                                    (size_t) (p - body));
            }

            escape = 0;
            continue;
        }

        n = 1;

        if (string) {

            if (escape) {
                escape = 0;

            } else if (*p == '\\') {
                escape = 1;

            } else if (*p == '"') {
                string = 0;
            }

            continue;
        }

        switch (*p) {

        case '"':
            string = 1;
            break;

        case '{':
        case '[':
            if (++depth > NGX_HTTP_WEBHOOK_LOCK_JSON_DEPTH) {
                return ngx_http_webhook_lock_detail(pool, detail,
                                            "nesting deeper than %d",
                                            NGX_HTTP_WEBHOOK_LOCK_JSON_DEPTH);
            }

            break;

        case '}':
        case ']':
            if (depth) {
                depth--;
            }

            break;

        default:
            break;
        }
    }

    return NGX_OK;
}


/* the length of a valid UTF-8 sequence at "p", 0 if there is none */

static size_t
ngx_http_webhook_lock_utf8_char(u_char *p, u_char *last)
{
    u_char  c, lo, hi;
    size_t  n, i;

    c = *p;

    if (c < 0x80) {
        return 1;
    }

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        lo = 0x80;
        hi = 0xbf;

    } else if (c == 0xe0) {            /* no overlong forms */
        n = 3;
        lo = 0xa0;
        hi = 0xbf;

    } else if (c == 0xed) {            /* no surrogates */
        n = 3;
        lo = 0x80;
        hi = 0x9f;

    } else if (c >= 0xe1 && c <= 0xef) {
        n = 3;
        lo = 0x80;
        hi = 0xbf;

    } else if (c == 0xf0) {            /* no overlong forms */
        n = 4;
        lo = 0x90;
        hi = 0xbf;

    } else if (c >= 0xf1 && c <= 0xf3) {
        n = 4;
        lo = 0x80;
        hi = 0xbf;

    } else if (c == 0xf4) {            /* nothing above U+10FFFF */
        n = 4;
        lo = 0x80;
        hi = 0x8f;

    } else {
        return 0;
    }

    if ((size_t) (last - p) < n || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
    }

    return n;
}


static void *
ngx_http_webhook_lock_json_alloc(size_t size)
{
    return ngx_palloc(ngx_http_webhook_lock_json_pool, size);
}


static void
ngx_http_webhook_lock_json_free(void *p)
{
    /* the pool frees it */
}


ngx_int_t
ngx_http_webhook_lock_form_parse(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_array_t *fields, ngx_str_t *detail)
{
    u_char        *p, *q, *eq, *last;
    ngx_int_t      rc;
    ngx_keyval_t  *kv;

    ngx_str_null(detail);

    if (ngx_array_init(fields, pool, 16, sizeof(ngx_keyval_t)) != NGX_OK) {
        return NGX_ERROR;
    }

    if (len == 0) {
        ngx_str_set(detail, "empty body");
        return NGX_DECLINED;
    }

    last = body + len;

    for (p = body; p < last; p = (q < last) ? q + 1 : last) {

        eq = NULL;

        for (q = p; q < last && *q != '&'; q++) {
            if (*q == '=' && eq == NULL) {
                eq = q;
            }
        }

        if (q == p) {
            continue;
        }

        kv = ngx_array_push(fields);
        if (kv == NULL) {
            return NGX_ERROR;
        }

        rc = ngx_http_webhook_lock_form_decode(pool, body, p, eq ? eq : q,
                                               &kv->key, detail);
        if (rc != NGX_OK) {
            return rc;
        }

        rc = ngx_http_webhook_lock_form_decode(pool, body, eq ? eq + 1 : q, q,
                                               &kv->value, detail);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_webhook_lock_form_decode(ngx_pool_t *pool, u_char *body,
    u_char *start, u_char *end, ngx_str_t *out, ngx_str_t *detail)
{
    u_char     *s, *d, *last;
    size_t      n;
    ngx_int_t   hi, lo;

    if (start == end) {
        out->len = 0;
        out->data = start;
        return NGX_OK;
    }

    out->data = ngx_pnalloc(pool, end - start);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    d = out->data;

    for (s = start; s < end; s++) {

        if (*s == '+') {
            *d++ = ' ';
            continue;
        }

        if (*s != '%') {
            *d++ = *s;
            continue;
        }

        if (end - s < 3) {
            goto malformed;
        }

        hi = ngx_http_webhook_lock_hex(s[1]);
        lo = ngx_http_webhook_lock_hex(s[2]);

        if (hi < 0 || lo < 0) {
            goto malformed;
        }

        *d++ = (u_char) (hi << 4 | lo);
        s += 2;
    }

    out->len = d - out->data;

    last = d;

    for (d = out->data; d < last; d += n) {

        if (*d == '\0') {
            return ngx_http_webhook_lock_detail(pool, detail,
                                                "NUL byte in form field "
                                                "at byte %uz",
                                                (size_t) (start - body));
        }

        n = ngx_http_webhook_lock_utf8_char(d, last);

        if (n == 0) {
            return ngx_http_webhook_lock_detail(pool, detail,
                                                "invalid UTF-8 in form field "
                                                "at byte %uz",
                                                (size_t) (start - body));
        }
    }

    return NGX_OK;

malformed:

    return ngx_http_webhook_lock_detail(pool, detail,
                                        "malformed form body at byte %uz",
                                        (size_t) (s - body));
}


static ngx_int_t
ngx_http_webhook_lock_hex(u_char c)
{
    u_char  ch;

    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    ch = (u_char) (c | 0x20);

    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }

    return -1;
}


ngx_str_t *
ngx_http_webhook_lock_form_get(ngx_array_t *fields, const char *name)
{
    size_t         len;
    ngx_uint_t     i;
    ngx_keyval_t  *kv;

    len = ngx_strlen(name);
    kv = fields->elts;

    for (i = 0; i < fields->nelts; i++) {
        if (kv[i].key.len == len
            && ngx_strncmp(kv[i].key.data, name, len) == 0)
        {
            return &kv[i].value;
        }
    }

    return NULL;
}


ngx_int_t ngx_cdecl
ngx_http_webhook_lock_detail(ngx_pool_t *pool, ngx_str_t *detail,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    p = ngx_pnalloc(pool, NGX_HTTP_WEBHOOK_LOCK_DETAIL_LEN);
    if (p == NULL) {
        ngx_str_null(detail);
        return NGX_ERROR;
    }

    va_start(args, fmt);
    detail->len = ngx_vslprintf(p, p + NGX_HTTP_WEBHOOK_LOCK_DETAIL_LEN, fmt,
                                args)
                  - p;
    va_end(args);

    detail->data = p;

    return NGX_DECLINED;
}
