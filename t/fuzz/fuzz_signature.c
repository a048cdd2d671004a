
/*
 * Copyright (C) webhook_lock authors
 */


/*
 * The signature headers and their checks: "F" "HEADER VALUE" "\n" "BODY".
 * F % 128 % 7 picks the format (whatsapp, instagram, messenger, tiktok,
 * twilio, telegram, line) and with it the header (bit 7, for messenger: the SHA-1
 * "X-Hub-Signature"); the value and the body are the fuzzer's.  Secrets
 * are fixed, so the seeds carry the few inputs that verify.  The file
 * under test is included, for its static parsers and an HTTP request of
 * our own making.
 */


#include "ngx_http_webhook_lock_signature.c"

#include "ngx_shim.h"


#define FUZZ_SIGNATURE_SECRET  "fuzz-secret"
#define FUZZ_SIGNATURE_URL     "https://hooks.example.com/twilio"


static ngx_str_t  fuzz_signature_headers[] = {
    ngx_string("X-Hub-Signature-256"),
    ngx_string("X-Hub-Signature-256"),
    ngx_string("X-Hub-Signature-256"),
    ngx_string("Tiktok-Signature"),
    ngx_string("X-Twilio-Signature"),
    ngx_string("X-Telegram-Bot-Api-Secret-Token"),
    ngx_string("X-Line-Signature")
};


static ngx_uint_t  fuzz_signature_formats[] = {
    NGX_HTTP_WEBHOOK_LOCK_WHATSAPP,
    NGX_HTTP_WEBHOOK_LOCK_INSTAGRAM,
    NGX_HTTP_WEBHOOK_LOCK_MESSENGER,
    NGX_HTTP_WEBHOOK_LOCK_TIKTOK,
    NGX_HTTP_WEBHOOK_LOCK_TWILIO,
    NGX_HTTP_WEBHOOK_LOCK_TELEGRAM,
    NGX_HTTP_WEBHOOK_LOCK_LINE
};


/* a complex value without variables is its text */

ngx_int_t
ngx_http_complex_value(ngx_http_request_t *r, ngx_http_complex_value_t *val,
    ngx_str_t *value)
{
    (void) r;

    *value = val->value;

    return NGX_OK;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                    *nl;
    ngx_int_t                  rc;
    ngx_str_t                  body;
    ngx_uint_t                 format, i;
    ngx_log_t                  log;
    ngx_pool_t                *pool;
    ngx_array_t                secrets;
    ngx_table_elt_t           *h;
    ngx_connection_t           c;
    ngx_http_request_t         r;
    ngx_http_complex_value_t  *cv, url;

    static int                 verbose = -1;

    if (size < 1) {
        return 0;
    }

    i = (data[0] & 0x7f) % 7;
    format = fuzz_signature_formats[i];

    pool = ngx_create_pool(1024, &ngx_shim_log);

    ngx_memzero(&log, sizeof(ngx_log_t));
    log.log_level = NGX_LOG_DEBUG_ALL | NGX_LOG_INFO;

    ngx_memzero(&c, sizeof(ngx_connection_t));
    c.log = &log;

    ngx_memzero(&r, sizeof(ngx_http_request_t));
    r.pool = pool;
    r.connection = &c;

    if (ngx_list_init(&r.headers_in.headers, pool, 2,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        abort();
    }

    /* the header, in exact-size copies; a decoy before it */

    h = ngx_list_push(&r.headers_in.headers);
    ngx_memzero(h, sizeof(ngx_table_elt_t));
    h->hash = 1;
    ngx_str_set(&h->key, "X-Hub-Signature-2560");
    ngx_str_set(&h->value, "sha256=");

    h = ngx_list_push(&r.headers_in.headers);
    ngx_memzero(h, sizeof(ngx_table_elt_t));
    h->hash = 1;
    h->key = fuzz_signature_headers[i];

    if (format == NGX_HTTP_WEBHOOK_LOCK_MESSENGER && (data[0] & 0x80)) {
        ngx_str_set(&h->key, "x-hub-signature");
    }

    nl = memchr(data + 1, '\n', size - 1);

    h->value.len = nl ? (size_t) (nl - data - 1) : size - 1;
    h->value.data = ngx_pnalloc(pool, h->value.len);
    ngx_memcpy(h->value.data, data + 1, h->value.len);

    body.len = nl ? size - (nl - data) - 1 : 0;
    body.data = ngx_pnalloc(pool, body.len);
    ngx_memcpy(body.data, nl ? nl + 1 : data, body.len);

    if (ngx_array_init(&secrets, pool, 2, sizeof(ngx_http_complex_value_t))
        != NGX_OK)
    {
        abort();
    }

    /* an empty secret is skipped, the second one is the one */

    cv = ngx_array_push(&secrets);
    ngx_memzero(cv, sizeof(ngx_http_complex_value_t));

    cv = ngx_array_push(&secrets);
    ngx_memzero(cv, sizeof(ngx_http_complex_value_t));
    ngx_str_set(&cv->value, FUZZ_SIGNATURE_SECRET);

    ngx_memzero(&url, sizeof(ngx_http_complex_value_t));
    ngx_str_set(&url.value, FUZZ_SIGNATURE_URL);

    rc = ngx_http_webhook_lock_signature_check(&r, &secrets, &url, format,
                                               &body);

    ngx_shim_assert(rc == NGX_OK || rc == NGX_DECLINED);
    ngx_shim_assert(log.log_level == (NGX_LOG_DEBUG_ALL | NGX_LOG_INFO));

    /* FUZZ_VERBOSE=1 fuzz_signature SEEDS...: which seeds verify */

    if (verbose == -1) {
        verbose = (getenv("FUZZ_VERBOSE") != NULL);
    }

    if (verbose) {
        fprintf(stderr, "signature check: %s\n",
                rc == NGX_OK ? "verified" : "declined");
    }

    ngx_destroy_pool(pool);

    return 0;
}
