
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <cjson/cJSON.h>

#include "ngx_http_webhook_lock_payload.h"

#if (defined __SSE2__)
#include <emmintrin.h>
#endif


/* JSON white space, RFC 8259 */
#define ngx_http_webhook_lock_json_space(c)                                  \
    ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')

/* 2^53: every integer below it is exact in a double */
#define NGX_HTTP_WEBHOOK_LOCK_EXACT_MAX  9007199254740992.0

/* what a byte is to the JSON scan: ngx_http_webhook_lock_json_class[] */
#define NGX_HTTP_WEBHOOK_LOCK_JSON_OTHER   0
#define NGX_HTTP_WEBHOOK_LOCK_JSON_OPEN    1       /* "{", "[" */
#define NGX_HTTP_WEBHOOK_LOCK_JSON_CLOSE   2       /* "}", "]" */
#define NGX_HTTP_WEBHOOK_LOCK_JSON_QUOTE   3       /* from here on, a byte
                                                      ends a string's run */
#define NGX_HTTP_WEBHOOK_LOCK_JSON_ESCAPE  4       /* "\\" */
#define NGX_HTTP_WEBHOOK_LOCK_JSON_NUL     5
#define NGX_HTTP_WEBHOOK_LOCK_JSON_HIGH    8       /* 0x80 and above, by
                                                      UTF-8 lead: 8 to 15 */

/* cJSON's nodes and strings are cut from pool blocks of this size */
#define NGX_HTTP_WEBHOOK_LOCK_JSON_BLOCK   1024

/* a string's bytes are looked at sixteen or eight at a time */
#if (NGX_HAVE_LITTLE_ENDIAN && defined __GNUC__)
#define NGX_HTTP_WEBHOOK_LOCK_SWAR         1
#define NGX_HTTP_WEBHOOK_LOCK_ONES         0x0101010101010101ULL
#if (defined __SSE2__)
#define NGX_HTTP_WEBHOOK_LOCK_SSE2         1
#endif
#endif


static char *ngx_http_webhook_lock_path_error(ngx_conf_t *cf, ngx_str_t *text,
    char *err, u_char *pos);
static ngx_int_t ngx_http_webhook_lock_path_step(
    ngx_http_webhook_lock_path_t *path, ngx_uint_t i, cJSON *node,
    ngx_http_webhook_lock_value_pt handler, void *data);
static size_t ngx_http_webhook_lock_utf8_char(u_char *p, u_char *last);
static ngx_inline size_t ngx_http_webhook_lock_utf8_seq(u_char *p,
    u_char *last);
static u_char *ngx_http_webhook_lock_json_copy(ngx_pool_t *pool,
    u_char *body, size_t len, ngx_array_t *strings, size_t *size);
static u_char *ngx_http_webhook_lock_json_position(u_char *body,
    u_char *text, u_char *pos, ngx_array_t *strings);
static ngx_int_t ngx_http_webhook_lock_json_strings(ngx_pool_t *pool,
    u_char *body, u_char *pos, ngx_array_t *strings, ngx_str_t *detail);
static ngx_int_t ngx_http_webhook_lock_json_string(ngx_pool_t *pool,
    u_char *body, ngx_http_webhook_lock_string_t *ls, ngx_str_t *detail);
static size_t ngx_http_webhook_lock_json_utf16(u_char *p, u_char *last,
    u_char **out);
static ngx_uint_t ngx_http_webhook_lock_json_hex4(u_char *p);
static ngx_uint_t ngx_http_webhook_lock_json_restore(cJSON *node,
    ngx_http_webhook_lock_string_t *ls, ngx_uint_t i);
static void *ngx_http_webhook_lock_json_alloc(size_t size);
static void ngx_http_webhook_lock_json_free(void *p);
static ngx_int_t ngx_http_webhook_lock_form_decode(ngx_pool_t *pool,
    u_char *body, u_char *start, u_char *end, ngx_str_t *out,
    ngx_str_t *detail);
static ngx_int_t ngx_http_webhook_lock_hex(u_char c);


/*
 * The pool cJSON allocates from while it parses (one worker, one thread),
 * and the free part of the block its nodes and strings are cut from.
 */
static ngx_pool_t  *ngx_http_webhook_lock_json_pool;
static u_char      *ngx_http_webhook_lock_json_last;
static u_char      *ngx_http_webhook_lock_json_end;


size_t  ngx_http_webhook_lock_json_long = NGX_HTTP_WEBHOOK_LOCK_JSON_LONG;


static u_char  ngx_http_webhook_lock_json_class[256] = {
     5,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 00 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 10 */
     0,  0,  3,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 20 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 30 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 40 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  1,  4,  2,  0,  0,  /* 50 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 60 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  1,  0,  2,  0,  0,  /* 70 */
     8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* 80 */
     8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* 90 */
     8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* a0 */
     8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* b0 */
     8,  8,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  /* c0 */
     9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  /* d0 */
    10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, 11, 11,  /* e0 */
    13, 14, 14, 14, 15,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8   /* f0 */
};


/*
 * By lead byte class: the length of the sequence and the range of its
 * second byte, which rules out overlong forms (e0, f0), surrogates (ed)
 * and what is above U+10FFFF (f4).
 */

static u_char  ngx_http_webhook_lock_utf8[8][3] = {
    { 0, 0, 0 },                       /* 80-c1, f5-ff: never a lead */
    { 2, 0x80, 0xbf },                 /* c2-df */
    { 3, 0xa0, 0xbf },                 /* e0 */
    { 3, 0x80, 0xbf },                 /* e1-ec, ee-ef */
    { 3, 0x80, 0x9f },                 /* ed */
    { 4, 0x90, 0xbf },                 /* f0 */
    { 4, 0x80, 0xbf },                 /* f1-f3 */
    { 4, 0x80, 0x8f }                  /* f4 */
};


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


/*
 * cJSON copies a string a byte at a time, and twice looks at each byte.
 * A string of ngx_http_webhook_lock_json_long bytes or more (the message
 * text of a large webhook) is decoded here instead, the way cJSON's
 * parse_string() does, errors and their offsets included: cJSON parses a
 * copy of the body where each such string stands as "\xff", a string no
 * valid text decodes to, and the decoded text takes its place in the tree.
 */

cJSON *
ngx_http_webhook_lock_json_parse(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_str_t *detail)
{
    cJSON        *root;
    u_char       *p, *last, *text;
    size_t        size;
    ngx_int_t     rc;
    const char   *end;
    cJSON_Hooks   hooks;
    ngx_array_t   strings;

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

    ngx_memzero(&strings, sizeof(ngx_array_t));

    if (ngx_http_webhook_lock_json_scan(pool, body, len, &strings, detail)
        != NGX_OK)
    {
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

    text = body;
    size = len;

    if (strings.nelts) {
        text = ngx_http_webhook_lock_json_copy(pool, body, len, &strings,
                                               &size);
        if (text == NULL) {
            return NULL;
        }
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

    root = cJSON_ParseWithLengthOpts((const char *) text, size, &end, 0);

    cJSON_InitHooks(NULL);
    ngx_http_webhook_lock_json_pool = NULL;
    ngx_http_webhook_lock_json_last = NULL;
    ngx_http_webhook_lock_json_end = NULL;

    /* where cJSON stopped: past the value, or where it found an error */

    p = end ? (u_char *) end : text;

    if (strings.nelts) {
        p = ngx_http_webhook_lock_json_position(body, text, p, &strings);

        /* cJSON would have met an error in a string before that one */

        rc = ngx_http_webhook_lock_json_strings(pool, body, p, &strings,
                                                detail);
        if (rc != NGX_OK) {
            return NULL;
        }

        if (root) {
            (void) ngx_http_webhook_lock_json_restore(root, strings.elts, 0);
        }
    }

    if (root == NULL) {
        (void) ngx_http_webhook_lock_detail(pool, detail,
                                            "malformed JSON near byte %uz",
                                            (size_t) (p - body));
        return NULL;
    }

    while (p < last && ngx_http_webhook_lock_json_space(*p)) {
        p++;
    }

    if (p < last) {
        (void) ngx_http_webhook_lock_detail(pool, detail,
                                            "trailing data at byte %uz",
                                            (size_t) (p - body));
        return NULL;
    }

    return root;
}


/* the body with every long string as "\xff" */

static u_char *
ngx_http_webhook_lock_json_copy(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_array_t *strings, size_t *size)
{
    u_char                          *p, *q, *text;
    size_t                           n;
    ngx_uint_t                       i;
    ngx_http_webhook_lock_string_t  *ls;

    ls = strings->elts;
    n = len;

    for (i = 0; i < strings->nelts; i++) {
        n -= (ls[i].end - ls[i].start) - 3;
    }

    text = ngx_pnalloc(pool, n);
    if (text == NULL) {
        return NULL;
    }

    p = body;
    q = text;

    for (i = 0; i < strings->nelts; i++) {
        q = ngx_cpymem(q, p, ls[i].start - p);

        ls[i].copy = q;

        *q++ = '"';
        *q++ = 0xff;
        *q++ = '"';

        p = ls[i].end;
    }

    q = ngx_cpymem(q, p, body + len - p);

    *size = q - text;

    return text;
}


/* a position in the copy as one in the body */

static u_char *
ngx_http_webhook_lock_json_position(u_char *body, u_char *text, u_char *pos,
    ngx_array_t *strings)
{
    size_t                           shift;
    ngx_uint_t                       i;
    ngx_http_webhook_lock_string_t  *ls;

    ls = strings->elts;
    shift = 0;

    /* from its closing quote on, a stand-in is as long as its string */

    for (i = 0; i < strings->nelts && pos >= ls[i].copy + 2; i++) {
        shift += (ls[i].end - ls[i].start) - 3;
    }

    return body + (pos - text) + shift;
}


/* decodes the long strings that start before "pos" */

static ngx_int_t
ngx_http_webhook_lock_json_strings(ngx_pool_t *pool, u_char *body,
    u_char *pos, ngx_array_t *strings, ngx_str_t *detail)
{
    ngx_int_t                        rc;
    ngx_uint_t                       i;
    ngx_http_webhook_lock_string_t  *ls;

    ls = strings->elts;

    for (i = 0; i < strings->nelts && ls[i].start < pos; i++) {
        rc = ngx_http_webhook_lock_json_string(pool, body, &ls[i], detail);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


/* cJSON's parse_string(): the same text, the same errors at the same byte */

static ngx_int_t
ngx_http_webhook_lock_json_string(ngx_pool_t *pool, u_char *body,
    ngx_http_webhook_lock_string_t *ls, ngx_str_t *detail)
{
    u_char  *p, *q, *last, *d;
    size_t   n;

    p = ls->start + 1;
    last = ls->end - 1;

    d = ngx_pnalloc(pool, last - p + 1);
    if (d == NULL) {
        return NGX_ERROR;
    }

    ls->value = d;

    while (p < last) {

        q = memchr(p, '\\', last - p);

        if (q == NULL) {
            d = ngx_cpymem(d, p, last - p);
            break;
        }

        d = ngx_cpymem(d, p, q - p);
        p = q;

        /* p + 1 < last: the scan saw the backslash escape a byte */

        switch (p[1]) {

        case 'b':
            *d++ = '\b';
            break;

        case 'f':
            *d++ = '\f';
            break;

        case 'n':
            *d++ = '\n';
            break;

        case 'r':
            *d++ = '\r';
            break;

        case 't':
            *d++ = '\t';
            break;

        case '"':
        case '\\':
        case '/':
            *d++ = p[1];
            break;

        case 'u':
            n = ngx_http_webhook_lock_json_utf16(p, last, &d);
            if (n == 0) {
                goto malformed;
            }

            p += n;
            continue;

        default:
            goto malformed;
        }

        p += 2;
    }

    *d = '\0';

    return NGX_OK;

malformed:

    return ngx_http_webhook_lock_detail(pool, detail,
                                        "malformed JSON near byte %uz",
                                        (size_t) (p - body));
}


/*
 * "\uXXXX", or a surrogate pair "\uXXXX\uXXXX", as UTF-8: the length of
 * the escape, or 0.  As in cJSON, a bad hex digit makes the code 0.
 */

static size_t
ngx_http_webhook_lock_json_utf16(u_char *p, u_char *last, u_char **out)
{
    u_char      *d;
    size_t       n;
    ngx_uint_t   c, lo;

    if (last - p < 6) {
        return 0;
    }

    c = ngx_http_webhook_lock_json_hex4(p + 2);

    if (c >= 0xdc00 && c <= 0xdfff) {
        return 0;
    }

    n = 6;

    if (c >= 0xd800 && c <= 0xdbff) {

        if (last - p < 12 || p[6] != '\\' || p[7] != 'u') {
            return 0;
        }

        lo = ngx_http_webhook_lock_json_hex4(p + 8);

        if (lo < 0xdc00 || lo > 0xdfff) {
            return 0;
        }

        c = 0x10000 + (((c & 0x3ff) << 10) | (lo & 0x3ff));
        n = 12;
    }

    d = *out;

    if (c < 0x80) {
        *d++ = (u_char) c;

    } else if (c < 0x800) {
        *d++ = (u_char) (0xc0 | (c >> 6));
        *d++ = (u_char) (0x80 | (c & 0x3f));

    } else if (c < 0x10000) {
        *d++ = (u_char) (0xe0 | (c >> 12));
        *d++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
        *d++ = (u_char) (0x80 | (c & 0x3f));

    } else {
        *d++ = (u_char) (0xf0 | (c >> 18));
        *d++ = (u_char) (0x80 | ((c >> 12) & 0x3f));
        *d++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
        *d++ = (u_char) (0x80 | (c & 0x3f));
    }

    *out = d;

    return n;
}


static ngx_uint_t
ngx_http_webhook_lock_json_hex4(u_char *p)
{
    ngx_int_t   d;
    ngx_uint_t  i, c;

    c = 0;

    for (i = 0; i < 4; i++) {
        d = ngx_http_webhook_lock_hex(p[i]);

        if (d < 0) {
            return 0;
        }

        c = c << 4 | d;
    }

    return c;
}


/* the decoded strings in place of their stand-ins, in document order */

static ngx_uint_t
ngx_http_webhook_lock_json_restore(cJSON *node,
    ngx_http_webhook_lock_string_t *ls, ngx_uint_t i)
{
    for ( /* void */ ; node; node = node->next) {

        if (node->string && (u_char) node->string[0] == 0xff) {
            node->string = (char *) ls[i++].value;
        }

        if (cJSON_IsString(node) && (u_char) node->valuestring[0] == 0xff) {
            node->valuestring = (char *) ls[i++].value;
        }

        if (node->child) {
            i = ngx_http_webhook_lock_json_restore(node->child, ls, i);
        }
    }

    return i;
}


/*
 * One pass before cJSON sees the body: strict UTF-8 (no overlong forms,
 * no surrogates, nothing above U+10FFFF), no NUL byte, and nesting no
 * deeper than NGX_HTTP_WEBHOOK_LOCK_JSON_DEPTH, which bounds cJSON's
 * recursion.  Brackets inside strings do not count.
 */

ngx_int_t
ngx_http_webhook_lock_json_scan(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_array_t *strings, ngx_str_t *detail)
{
    u_char                          *p, *last, *start;
    size_t                           n;
    ngx_uint_t                       depth;
    ngx_http_webhook_lock_string_t  *ls;
#if (NGX_HTTP_WEBHOOK_LOCK_SWAR)
    uint64_t                         w, x, y, m;
#endif
#if (NGX_HTTP_WEBHOOK_LOCK_SSE2)
    int                              k;
    __m128i                          v, quote, escape, nul;
#endif

    depth = 0;
    start = body;

#if (NGX_HTTP_WEBHOOK_LOCK_SSE2)
    quote = _mm_set1_epi8('"');
    escape = _mm_set1_epi8('\\');
    nul = _mm_setzero_si128();
#endif

    p = body;
    last = body + len;

value:

    while (p < last) {

        switch (ngx_http_webhook_lock_json_class[*p]) {

        case NGX_HTTP_WEBHOOK_LOCK_JSON_OPEN:
            if (++depth > NGX_HTTP_WEBHOOK_LOCK_JSON_DEPTH) {
                return ngx_http_webhook_lock_detail(pool, detail,
                                            "nesting deeper than %d",
                                            NGX_HTTP_WEBHOOK_LOCK_JSON_DEPTH);
            }

            p++;
            break;

        case NGX_HTTP_WEBHOOK_LOCK_JSON_CLOSE:
            if (depth) {
                depth--;
            }

            p++;
            break;

        case NGX_HTTP_WEBHOOK_LOCK_JSON_QUOTE:
            start = p++;
            goto string;

        case NGX_HTTP_WEBHOOK_LOCK_JSON_NUL:
            goto nul;

        case NGX_HTTP_WEBHOOK_LOCK_JSON_OTHER:
        case NGX_HTTP_WEBHOOK_LOCK_JSON_ESCAPE:
            p++;
            break;

        default: /* 0x80 and above */
            n = ngx_http_webhook_lock_utf8_seq(p, last);
            if (n == 0) {
                goto invalid;
            }

            p += n;
            break;
        }
    }

    return NGX_OK;

string:

    for ( ;; ) {

#if (NGX_HTTP_WEBHOOK_LOCK_SSE2)

        /* the top bit of each byte: equal to '"', '\\' or NUL, or set */

        while (last - p >= 16) {
            v = _mm_loadu_si128((__m128i *) p);

            k = _mm_movemask_epi8(
                    _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                              _mm_cmpeq_epi8(v, escape)),
                                 _mm_or_si128(_mm_cmpeq_epi8(v, nul), v)));

            if (k) {
                p += __builtin_ctz(k);
                goto special;
            }

            p += 16;
        }

#endif

#if (NGX_HTTP_WEBHOOK_LOCK_SWAR)

        /*
         * Eight bytes at a time while none of them is a quote, a
         * backslash, NUL or 0x80 and above.  A byte of x or y is zero
         * where one of w is '"' or '\\'; below 0x80, a byte minus one has
         * its top bit set only when it was zero.  A borrow only makes a
         * false mark above a true one, so the lowest mark is the first
         * byte to look at.
         */

        while (last - p >= 8) {
            ngx_memcpy(&w, p, 8);

            x = w ^ (NGX_HTTP_WEBHOOK_LOCK_ONES * '"');
            y = w ^ (NGX_HTTP_WEBHOOK_LOCK_ONES * '\\');

            m = (w - NGX_HTTP_WEBHOOK_LOCK_ONES)
                | (x - NGX_HTTP_WEBHOOK_LOCK_ONES)
                | (y - NGX_HTTP_WEBHOOK_LOCK_ONES)
                | w;

            m &= NGX_HTTP_WEBHOOK_LOCK_ONES * 0x80;

            if (m) {
                p += __builtin_ctzll(m) >> 3;
                goto special;
            }

            p += 8;
        }

#endif

        while (p < last
               && ngx_http_webhook_lock_json_class[*p]
                  < NGX_HTTP_WEBHOOK_LOCK_JSON_QUOTE)
        {
            p++;
        }

        if (p == last) {
            return NGX_OK;
        }

#if (NGX_HTTP_WEBHOOK_LOCK_SWAR)
    special:
#endif

        switch (ngx_http_webhook_lock_json_class[*p]) {

        case NGX_HTTP_WEBHOOK_LOCK_JSON_QUOTE:
            p++;

            if (strings == NULL
                || (size_t) (p - start - 2) < ngx_http_webhook_lock_json_long)
            {
                goto value;
            }

            if (strings->nalloc == 0
                && ngx_array_init(strings, pool, 4,
                                  sizeof(ngx_http_webhook_lock_string_t))
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            ls = ngx_array_push(strings);
            if (ls == NULL) {
                return NGX_ERROR;
            }

            ls->start = start;
            ls->end = p;

            goto value;

        case NGX_HTTP_WEBHOOK_LOCK_JSON_ESCAPE:
            p++;

            if (p == last) {
                return NGX_OK;
            }

            if (*p == '\0') {
                goto nul;
            }

            if (*p < 0x80) {
                p++;
                continue;
            }

            break;

        case NGX_HTTP_WEBHOOK_LOCK_JSON_NUL:
            goto nul;

        default: /* 0x80 and above */
            break;
        }

        /* outside Latin scripts, text is runs of multi-byte sequences */

        do {
            n = ngx_http_webhook_lock_utf8_seq(p, last);
            if (n == 0) {
                goto invalid;
            }

            p += n;

        } while (p < last && *p >= 0x80);
    }

nul:

    return ngx_http_webhook_lock_detail(pool, detail, "NUL byte at byte %uz",
                                        (size_t) (p - body));

invalid:

    return ngx_http_webhook_lock_detail(pool, detail,
                                        "invalid UTF-8 at byte %uz",
                                        (size_t) (p - body));
}


/* the length of a valid UTF-8 sequence at "p", 0 if there is none */

static size_t
ngx_http_webhook_lock_utf8_char(u_char *p, u_char *last)
{
    if (*p < 0x80) {
        return 1;
    }

    return ngx_http_webhook_lock_utf8_seq(p, last);
}


/* the same for a byte of 0x80 and above */

static ngx_inline size_t
ngx_http_webhook_lock_utf8_seq(u_char *p, u_char *last)
{
    u_char  *seq;
    size_t   n;

    seq = ngx_http_webhook_lock_utf8[ngx_http_webhook_lock_json_class[*p]
                                     - NGX_HTTP_WEBHOOK_LOCK_JSON_HIGH];
    n = seq[0];

    if (n == 0 || (size_t) (last - p) < n || p[1] < seq[1] || p[1] > seq[2]) {
        return 0;
    }

    if (n > 2 && (p[2] & 0xc0) != 0x80) {
        return 0;
    }

    if (n > 3 && (p[3] & 0xc0) != 0x80) {
        return 0;
    }

    return n;
}


static void *
ngx_http_webhook_lock_json_alloc(size_t size)
{
    u_char  *p;

    /* about 60 a webhook: cut from blocks, not one ngx_palloc() each */

    size = ngx_align(size, NGX_ALIGNMENT);

    p = ngx_http_webhook_lock_json_last;

    if (p && size <= (size_t) (ngx_http_webhook_lock_json_end - p)) {
        ngx_http_webhook_lock_json_last = p + size;
        return p;
    }

    if (size > NGX_HTTP_WEBHOOK_LOCK_JSON_BLOCK / 4) {
        return ngx_palloc(ngx_http_webhook_lock_json_pool, size);
    }

    p = ngx_palloc(ngx_http_webhook_lock_json_pool,
                   NGX_HTTP_WEBHOOK_LOCK_JSON_BLOCK);
    if (p == NULL) {
        return NULL;
    }

    ngx_http_webhook_lock_json_last = p + size;
    ngx_http_webhook_lock_json_end = p + NGX_HTTP_WEBHOOK_LOCK_JSON_BLOCK;

    return p;
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
