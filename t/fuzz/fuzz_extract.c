
/*
 * Copyright (C) webhook_lock authors
 */


/*
 * ngx_http_webhook_lock_extract() for every format: "FO" then the body.
 * F picks the format (F % 9: whatsapp, instagram, messenger, tiktok,
 * twilio, json, telegram, line, sms); O's bits 0-2 give the body
 * webhook_sender, webhook_message_id and webhook_inbox paths (json always
 * has senders).  Checks what the handler relies on: a detail with every
 * 400, values within their limits, distinct and without control
 * characters, the body left as it came.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <cjson/cJSON.h>

#include "ngx_http_webhook_lock_formats.h"
#include "ngx_http_webhook_lock_payload.h"
#include "ngx_shim.h"


static void fuzz_extract_scan(ngx_pool_t *pool, u_char *body, size_t len);
static void fuzz_extract_json(ngx_pool_t *pool, u_char *body, size_t len);
static void fuzz_extract_same_tree(cJSON *a, cJSON *b);
static void fuzz_extract_same_payload(ngx_http_webhook_lock_payload_t *a,
    ngx_http_webhook_lock_payload_t *b);
static void fuzz_extract_same(ngx_str_t *a, ngx_str_t *b);
static ngx_int_t fuzz_extract_scan_ref(ngx_pool_t *pool, u_char *body,
    size_t len, ngx_str_t *detail);
static size_t fuzz_extract_utf8_ref(u_char *p, u_char *last);
static ngx_array_t *fuzz_extract_paths(ngx_conf_t *cf, char **texts);
static void fuzz_extract_check(ngx_array_t *a, ngx_uint_t max);
static void fuzz_extract_printable(ngx_str_t *s);
static void fuzz_extract_telegram(ngx_pool_t *pool, u_char *body,
    size_t len);


static char  *fuzz_extract_senders[] = {
    "from", "data[*].from", "[*].message.from", "sender.id",
    "entry[0].changes[*].value.messages[*].from", "From", NULL
};

static char  *fuzz_extract_ids[] = {
    "id", "data[*].id", "[*].message.id", "MessageSid", NULL
};

static char  *fuzz_extract_inboxes[] = {
    "account", "[0].inbox", "entry[*].id", "AccountSid", NULL
};


static ngx_pool_t   *fuzz_extract_pool;
static ngx_array_t  *fuzz_extract_rules[3];


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_conf_t  *cf;

    (void) argc;
    (void) argv;

    /* the paths live as long as the configuration would */

    fuzz_extract_pool = ngx_create_pool(1024, &ngx_shim_log);
    cf = ngx_shim_conf(fuzz_extract_pool);

    fuzz_extract_rules[0] = fuzz_extract_paths(cf, fuzz_extract_senders);
    fuzz_extract_rules[1] = fuzz_extract_paths(cf, fuzz_extract_ids);
    fuzz_extract_rules[2] = fuzz_extract_paths(cf, fuzz_extract_inboxes);

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                           *body;
    size_t                            len;
    ngx_int_t                         rc, ref;
    ngx_str_t                         detail, expect;
    ngx_pool_t                       *pool;
    ngx_http_webhook_lock_rules_t     rules;
    ngx_http_webhook_lock_payload_t   pl, expect_pl;

    if (size < 2) {
        return 0;
    }

    rules.format = NGX_HTTP_WEBHOOK_LOCK_WHATSAPP + data[0] % 9;
    rules.senders = (data[1] & 1) ? fuzz_extract_rules[0] : NULL;
    rules.message_ids = (data[1] & 2) ? fuzz_extract_rules[1] : NULL;
    rules.inboxes = (data[1] & 4) ? fuzz_extract_rules[2] : NULL;

    if (rules.format == NGX_HTTP_WEBHOOK_LOCK_JSON) {
        rules.senders = fuzz_extract_rules[0];
    }

    pool = ngx_create_pool(1024, &ngx_shim_log);

    /* an exact-size copy: a read past the body is caught */

    len = size - 2;
    body = ngx_pnalloc(pool, len);
    ngx_memcpy(body, data + 2, len);

    fuzz_extract_scan(pool, body, len);

    /*
     * cJSON alone, then with strings of 1 to 32 bytes and more decoded
     * by the module: the same tree, the same answer
     */

    ngx_http_webhook_lock_json_long = (size_t) -1;

    ref = ngx_http_webhook_lock_extract(pool, &rules, body, len, &expect_pl,
                                        &expect);

    ngx_http_webhook_lock_json_long = 1 + (data[1] >> 3);

    fuzz_extract_json(pool, body, len);

    rc = ngx_http_webhook_lock_extract(pool, &rules, body, len, &pl, &detail);

    if (rules.format == NGX_HTTP_WEBHOOK_LOCK_TELEGRAM) {
        fuzz_extract_telegram(pool, body, len);
    }

    ngx_shim_assert(rc == NGX_OK || rc == NGX_DECLINED);
    ngx_shim_assert(ngx_memcmp(body, data + 2, len) == 0);

    ngx_shim_assert(rc == ref);
    fuzz_extract_same(&detail, &expect);

    if (rc == NGX_OK) {
        fuzz_extract_same_payload(&pl, &expect_pl);
    }

    if (rc == NGX_DECLINED) {
        ngx_shim_assert(detail.len > 0);
        ngx_shim_assert(detail.len <= NGX_HTTP_WEBHOOK_LOCK_DETAIL_LEN);
        ngx_shim_assert(detail.data[0] != '\0');
        goto done;
    }

    ngx_shim_assert(pl.inbox.len <= NGX_HTTP_WEBHOOK_LOCK_VALUE_MAX);
    fuzz_extract_printable(&pl.inbox);

    fuzz_extract_check(&pl.senders, NGX_HTTP_WEBHOOK_LOCK_SENDERS_MAX);
    fuzz_extract_check(&pl.message_ids, NGX_HTTP_WEBHOOK_LOCK_IDS_MAX);

done:

    ngx_destroy_pool(pool);

    return 0;
}


/*
 * The JSON pre-scan, which skips through runs of bytes a word at a time,
 * against a byte-at-a-time scan written for clarity: the same answer and
 * the same detail for every body.
 */

static void
fuzz_extract_scan(ngx_pool_t *pool, u_char *body, size_t len)
{
    ngx_int_t  rc, ref;
    ngx_str_t  detail, expect;

    ngx_str_null(&detail);
    ngx_str_null(&expect);

    rc = ngx_http_webhook_lock_json_scan(pool, body, len, NULL, &detail);
    ref = fuzz_extract_scan_ref(pool, body, len, &expect);

    if (rc != ref
        || detail.len != expect.len
        || (detail.len
            && ngx_memcmp(detail.data, expect.data, detail.len) != 0))
    {
        fprintf(stderr, "scan: %d \"%.*s\", reference: %d \"%.*s\"\n",
                (int) rc, (int) detail.len, detail.data,
                (int) ref, (int) expect.len, expect.data);
        abort();
    }
}


/*
 * The tree and the detail with and without the module's string decoder,
 * which O's bits 3-7 make take strings from 1 to 32 bytes on.
 */

static void
fuzz_extract_json(ngx_pool_t *pool, u_char *body, size_t len)
{
    cJSON      *root, *ref;
    size_t      low;
    ngx_str_t   detail, expect;

    low = ngx_http_webhook_lock_json_long;

    ngx_http_webhook_lock_json_long = (size_t) -1;
    ref = ngx_http_webhook_lock_json_parse(pool, body, len, &expect);

    ngx_http_webhook_lock_json_long = low;
    root = ngx_http_webhook_lock_json_parse(pool, body, len, &detail);

    fuzz_extract_same(&detail, &expect);
    ngx_shim_assert((root == NULL) == (ref == NULL));

    fuzz_extract_same_tree(root, ref);
}


static void
fuzz_extract_same_tree(cJSON *a, cJSON *b)
{
    for ( /* void */ ; a && b; a = a->next, b = b->next) {
        ngx_shim_assert(a->type == b->type);
        ngx_shim_assert((a->string == NULL) == (b->string == NULL));

        if (a->string) {
            ngx_shim_assert(strcmp(a->string, b->string) == 0);
        }

        if (cJSON_IsString(a)) {
            ngx_shim_assert(strcmp(a->valuestring, b->valuestring) == 0);
        }

        if (cJSON_IsNumber(a)) {
            ngx_shim_assert(a->valueint == b->valueint);
            ngx_shim_assert(ngx_memcmp(&a->valuedouble, &b->valuedouble,
                                       sizeof(double))
                            == 0);
        }

        fuzz_extract_same_tree(a->child, b->child);
    }

    ngx_shim_assert(a == NULL && b == NULL);
}


static void
fuzz_extract_same_payload(ngx_http_webhook_lock_payload_t *a,
    ngx_http_webhook_lock_payload_t *b)
{
    ngx_str_t   *s, *t;
    ngx_uint_t   i;

    fuzz_extract_same(&a->inbox, &b->inbox);

    ngx_shim_assert(a->senders.nelts == b->senders.nelts);
    ngx_shim_assert(a->message_ids.nelts == b->message_ids.nelts);

    s = a->senders.elts;
    t = b->senders.elts;

    for (i = 0; i < a->senders.nelts; i++) {
        fuzz_extract_same(&s[i], &t[i]);
    }

    s = a->message_ids.elts;
    t = b->message_ids.elts;

    for (i = 0; i < a->message_ids.nelts; i++) {
        fuzz_extract_same(&s[i], &t[i]);
    }
}


static void
fuzz_extract_same(ngx_str_t *a, ngx_str_t *b)
{
    if (a->len == b->len
        && (a->len == 0 || ngx_memcmp(a->data, b->data, a->len) == 0))
    {
        return;
    }

    fprintf(stderr, "\"%.*s\" differs from \"%.*s\"\n",
            (int) a->len, a->data, (int) b->len, b->data);
    abort();
}


static ngx_int_t
fuzz_extract_scan_ref(ngx_pool_t *pool, u_char *body, size_t len,
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

        n = fuzz_extract_utf8_ref(p, last);

        if (n == 0) {
            return ngx_http_webhook_lock_detail(pool, detail,
                                                "invalid UTF-8 at byte %uz",
                                                (size_t) (p - body));
        }

        if (n > 1) {
            escape = 0;
            continue;
        }

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

        if (*p == '"') {
            string = 1;

        } else if (*p == '{' || *p == '[') {

            if (++depth > NGX_HTTP_WEBHOOK_LOCK_JSON_DEPTH) {
                return ngx_http_webhook_lock_detail(pool, detail,
                                            "nesting deeper than %d",
                                            NGX_HTTP_WEBHOOK_LOCK_JSON_DEPTH);
            }

        } else if ((*p == '}' || *p == ']') && depth) {
            depth--;
        }
    }

    return NGX_OK;
}


/* RFC 3629: a valid sequence at "p" decodes to U+0000..U+10FFFF */

static size_t
fuzz_extract_utf8_ref(u_char *p, u_char *last)
{
    size_t    n, i;
    uint32_t  c, min;

    if (*p < 0x80) {
        return 1;
    }

    if ((*p & 0xe0) == 0xc0) {
        n = 2;
        c = *p & 0x1f;
        min = 0x80;

    } else if ((*p & 0xf0) == 0xe0) {
        n = 3;
        c = *p & 0x0f;
        min = 0x800;

    } else if ((*p & 0xf8) == 0xf0) {
        n = 4;
        c = *p & 0x07;
        min = 0x10000;

    } else {
        return 0;
    }

    if ((size_t) (last - p) < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        c = c << 6 | (p[i] & 0x3f);
    }

    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return 0;
    }

    return n;
}


static ngx_array_t *
fuzz_extract_paths(ngx_conf_t *cf, char **texts)
{
    ngx_str_t                      text;
    ngx_array_t                   *a;
    ngx_http_webhook_lock_path_t **path;

    a = ngx_array_create(cf->pool, 4, sizeof(ngx_http_webhook_lock_path_t *));

    for ( /* void */ ; *texts; texts++) {
        text.data = (u_char *) *texts;
        text.len = ngx_strlen(*texts);

        path = ngx_array_push(a);

        ngx_shim_assert(ngx_http_webhook_lock_path_compile(cf, &text, path)
                        == NGX_CONF_OK);
    }

    return a;
}


/* non-empty, short enough, distinct, no more than allowed */

static void
fuzz_extract_check(ngx_array_t *a, ngx_uint_t max)
{
    ngx_str_t   *s;
    ngx_uint_t   i, j;

    ngx_shim_assert(a->nelts <= max);

    s = a->elts;

    for (i = 0; i < a->nelts; i++) {
        ngx_shim_assert(s[i].len > 0);
        ngx_shim_assert(s[i].len <= NGX_HTTP_WEBHOOK_LOCK_VALUE_MAX);
        fuzz_extract_printable(&s[i]);

        /* pairs among the first 100: enough, and quadratic */

        for (j = i + 1; j < a->nelts && j < 100; j++) {
            ngx_shim_assert(s[i].len != s[j].len
                            || ngx_memcmp(s[i].data, s[j].data, s[i].len)
                               != 0);
        }
    }
}


/* no control character: values go into log lines */

static void
fuzz_extract_printable(ngx_str_t *s)
{
    size_t  i;

    for (i = 0; i < s->len; i++) {
        ngx_shim_assert(s->data[i] >= 0x20 && s->data[i] != 0x7f);
    }
}


/* the body as a URI: its last segment, whatever it is, hashed away */

static void
fuzz_extract_telegram(ngx_pool_t *pool, u_char *body, size_t len)
{
    size_t      n;
    ngx_str_t   uri, inbox;

    uri.data = body;
    uri.len = len;

    for (n = len; n > 0 && body[n - 1] != '/'; n--) {
        /* void */
    }

    ngx_shim_assert(ngx_http_webhook_lock_telegram_inbox(pool, &uri, &inbox)
                    == NGX_OK);
    ngx_shim_assert(inbox.len == n + sizeof("sha256-") - 1 + 32);
    ngx_shim_assert(ngx_memcmp(inbox.data, body, n) == 0);
    ngx_shim_assert(ngx_memcmp(inbox.data + n, "sha256-", 7) == 0);
}
