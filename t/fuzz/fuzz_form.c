
/*
 * Copyright (C) webhook_lock authors
 */


/*
 * The form parser on its own (Twilio bodies): every field decoded, no
 * NUL byte and valid UTF-8 once accepted, never longer than its raw
 * text, the body left as it came, a detail with every 400.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <cjson/cJSON.h>

#include "ngx_http_webhook_lock_payload.h"
#include "ngx_shim.h"


static void fuzz_form_check(ngx_str_t *s, size_t max);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char        *body;
    ngx_int_t      rc;
    ngx_str_t      detail, *v;
    ngx_uint_t     i;
    ngx_pool_t    *pool;
    ngx_array_t    fields;
    ngx_keyval_t  *kv;

    pool = ngx_create_pool(1024, &ngx_shim_log);

    body = ngx_pnalloc(pool, size);
    ngx_memcpy(body, data, size);

    rc = ngx_http_webhook_lock_form_parse(pool, body, size, &fields, &detail);

    ngx_shim_assert(rc == NGX_OK || rc == NGX_DECLINED);
    ngx_shim_assert(ngx_memcmp(body, data, size) == 0);

    if (rc == NGX_DECLINED) {
        ngx_shim_assert(detail.len > 0);
        ngx_shim_assert(detail.len <= NGX_HTTP_WEBHOOK_LOCK_DETAIL_LEN);
        goto done;
    }

    kv = fields.elts;

    for (i = 0; i < fields.nelts; i++) {
        fuzz_form_check(&kv[i].key, size);
        fuzz_form_check(&kv[i].value, size);
        ngx_shim_assert(kv[i].key.len + kv[i].value.len <= size);
    }

    v = ngx_http_webhook_lock_form_get(&fields, "From");

    if (v) {
        fuzz_form_check(v, size);
    }

done:

    ngx_destroy_pool(pool);

    return 0;
}


/* valid UTF-8 without NUL, by a decoder of its own */

static void
fuzz_form_check(ngx_str_t *s, size_t max)
{
    u_char    *p, *last;
    uint32_t   cp;
    ngx_uint_t n, i;

    ngx_shim_assert(s->len <= max);

    p = s->data;
    last = p + s->len;

    while (p < last) {
        ngx_shim_assert(*p != '\0');

        if (*p < 0x80) {
            p++;
            continue;
        }

        if ((*p & 0xe0) == 0xc0) {
            n = 2;
            cp = *p & 0x1f;

        } else if ((*p & 0xf0) == 0xe0) {
            n = 3;
            cp = *p & 0x0f;

        } else {
            ngx_shim_assert((*p & 0xf8) == 0xf0);
            n = 4;
            cp = *p & 0x07;
        }

        ngx_shim_assert((size_t) (last - p) >= n);

        for (i = 1; i < n; i++) {
            ngx_shim_assert((p[i] & 0xc0) == 0x80);
            cp = cp << 6 | (p[i] & 0x3f);
        }

        /* shortest form, no surrogates, nothing above U+10FFFF */

        ngx_shim_assert(n != 2 || cp >= 0x80);
        ngx_shim_assert(n != 3 || cp >= 0x800);
        ngx_shim_assert(n != 4 || cp >= 0x10000);
        ngx_shim_assert(cp < 0xd800 || cp > 0xdfff);
        ngx_shim_assert(cp <= 0x10ffff);

        p += n;
    }
}
