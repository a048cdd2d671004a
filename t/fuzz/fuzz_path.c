
/*
 * Copyright (C) webhook_lock authors
 */


/*
 * PATH compiler and walker: "PATH\nJSON".  The text before the first
 * newline is compiled as a webhook_sender argument would be; when it
 * compiles, it is walked over the JSON after the newline (or over a
 * fixed document when that is no valid body).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <cjson/cJSON.h>

#include "ngx_http_webhook_lock_payload.h"
#include "ngx_shim.h"


static ngx_int_t fuzz_path_value(void *data, ngx_str_t *value);


static const char  fuzz_path_doc[] =
    "{\"from\":\"1\",\"a\":[{\"b\":1},{\"b\":\"x\"},[2,3.5,\"\"],null],"
    "\"entry\":[{\"id\":\"9\",\"changes\":[{\"value\":{\"messages\":"
    "[{\"from\":\"15551234567\",\"id\":\"wamid.1\"}]}}]}],"
    "\"n\":-1e300,\"t\":true}";


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                             *rv;
    cJSON                            *root;
    u_char                           *nl, *copy;
    ngx_str_t                         text, detail, *name;
    ngx_uint_t                        i, n;
    ngx_pool_t                       *pool;
    ngx_conf_t                       *cf;
    ngx_http_webhook_lock_path_t     *path;
    ngx_http_webhook_lock_segment_t  *seg;

    pool = ngx_create_pool(1024, &ngx_shim_log);
    cf = ngx_shim_conf(pool);

    /* exact-size copies: a read past either part is caught */

    nl = memchr(data, '\n', size);
    text.len = nl ? (size_t) (nl - data) : size;
    text.data = ngx_pnalloc(pool, text.len);
    ngx_memcpy(text.data, data, text.len);

    path = NULL;

    rv = ngx_http_webhook_lock_path_compile(cf, &text, &path);

    ngx_shim_assert(rv != NGX_CONF_ERROR);

    if (rv != NGX_CONF_OK) {
        ngx_shim_assert(ngx_strncmp(rv, "invalid path \"", 14) == 0);
        ngx_shim_assert(ngx_strlen(rv) < 64 + 2 * text.len);
        goto done;
    }

    ngx_shim_assert(path != NULL);
    ngx_shim_assert(path->nsegments >= 1);
    ngx_shim_assert(path->nsegments <= NGX_HTTP_WEBHOOK_LOCK_PATH_MAX);
    ngx_shim_assert(path->text.len == text.len);

    for (i = 0; i < path->nsegments; i++) {
        seg = &path->segments[i];

        if (seg->name.len) {
            ngx_shim_assert(seg->name.data[seg->name.len] == '\0');
            ngx_shim_assert(memchr(seg->name.data, '.', seg->name.len)
                            == NULL);
            ngx_shim_assert(memchr(seg->name.data, '[', seg->name.len)
                            == NULL);
            ngx_shim_assert(memchr(seg->name.data, ']', seg->name.len)
                            == NULL);

        } else {
            ngx_shim_assert(seg->index >= 0
                            || seg->index == NGX_HTTP_WEBHOOK_LOCK_PATH_ALL);
        }
    }

    name = ngx_http_webhook_lock_path_name(path);
    ngx_shim_assert(name == NULL
                    || (path->nsegments == 1 && name->len > 0));

    root = NULL;

    if (nl) {
        n = size - text.len - 1;
        copy = ngx_pnalloc(pool, n);
        ngx_memcpy(copy, nl + 1, n);

        root = ngx_http_webhook_lock_json_parse(pool, copy, n, &detail);
    }

    if (root == NULL) {
        root = ngx_http_webhook_lock_json_parse(pool, (u_char *) fuzz_path_doc,
                                                sizeof(fuzz_path_doc) - 1,
                                                &detail);
        ngx_shim_assert(root != NULL);
    }

    n = 0;

    ngx_shim_assert(ngx_http_webhook_lock_path_walk(path, root,
                                                    fuzz_path_value, &n)
                    == NGX_OK);

done:

    ngx_destroy_pool(pool);

    return 0;
}


static ngx_int_t
fuzz_path_value(void *data, ngx_str_t *value)
{
    ngx_uint_t  *n = data;

    ngx_shim_assert(value->len > 0);

    /* every byte is read: a value must lie in readable memory */

    (*n) += value->data[0] + value->data[value->len - 1];

    return NGX_OK;
}
