
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
#include <openssl/core_names.h>
#include <openssl/params.h>
#else
#include <openssl/hmac.h>
#endif

#include "ngx_http_webhook_lock_formats.h"
#include "ngx_http_webhook_lock_payload.h"
#include "ngx_http_webhook_lock_signature.h"


#define NGX_HTTP_WEBHOOK_LOCK_SHA1_LEN    20
#define NGX_HTTP_WEBHOOK_LOCK_SHA256_LEN  32


static ngx_int_t ngx_http_webhook_lock_signature_meta(ngx_http_request_t *r,
    ngx_array_t *secrets, ngx_uint_t format, ngx_str_t *body);
static ngx_int_t ngx_http_webhook_lock_signature_tiktok(
    ngx_http_request_t *r, ngx_array_t *secrets, ngx_str_t *body);
static ngx_int_t ngx_http_webhook_lock_signature_twilio(
    ngx_http_request_t *r, ngx_array_t *secrets,
    ngx_http_complex_value_t *url, ngx_str_t *body);
static ngx_int_t ngx_http_webhook_lock_signature_line(ngx_http_request_t *r,
    ngx_array_t *secrets, ngx_str_t *body);
static ngx_int_t ngx_http_webhook_lock_signature_telegram(
    ngx_http_request_t *r, ngx_array_t *secrets);
static int ngx_libc_cdecl ngx_http_webhook_lock_signature_cmp(
    const void *one, const void *two);
static ngx_table_elt_t *ngx_http_webhook_lock_signature_header(
    ngx_http_request_t *r, ngx_str_t *name);
static ngx_int_t ngx_http_webhook_lock_signature_base64(
    ngx_http_request_t *r, ngx_str_t *name, u_char *sig, size_t len);
static ngx_int_t ngx_http_webhook_lock_signature_hex(ngx_str_t *hex,
    u_char *out, size_t len);
static ngx_int_t ngx_http_webhook_lock_signature_verify(
    ngx_http_request_t *r, ngx_array_t *secrets, const EVP_MD *md,
    ngx_str_t *parts, ngx_uint_t nparts, u_char *sig, size_t len);
static ngx_int_t ngx_http_webhook_lock_signature_secret(
    ngx_http_request_t *r, ngx_http_complex_value_t *cv, ngx_str_t *secret);
static ngx_int_t ngx_http_webhook_lock_signature_hmac(ngx_log_t *log,
    const EVP_MD *md, ngx_str_t *key, ngx_str_t *parts, ngx_uint_t nparts,
    u_char *mac);
static ngx_int_t ngx_http_webhook_lock_signature_fail(ngx_http_request_t *r,
    ngx_str_t *name, char *reason);


ngx_int_t
ngx_http_webhook_lock_signature_check(ngx_http_request_t *r,
    ngx_array_t *secrets, ngx_http_complex_value_t *url, ngx_uint_t format,
    ngx_str_t *body)
{
    switch (format) {

    case NGX_HTTP_WEBHOOK_LOCK_WHATSAPP:
    case NGX_HTTP_WEBHOOK_LOCK_INSTAGRAM:
    case NGX_HTTP_WEBHOOK_LOCK_MESSENGER:
        return ngx_http_webhook_lock_signature_meta(r, secrets, format, body);

    case NGX_HTTP_WEBHOOK_LOCK_TIKTOK:
        return ngx_http_webhook_lock_signature_tiktok(r, secrets, body);

    case NGX_HTTP_WEBHOOK_LOCK_TWILIO:
        return ngx_http_webhook_lock_signature_twilio(r, secrets, url, body);

    case NGX_HTTP_WEBHOOK_LOCK_LINE:
        return ngx_http_webhook_lock_signature_line(r, secrets, body);

    case NGX_HTTP_WEBHOOK_LOCK_TELEGRAM:
        return ngx_http_webhook_lock_signature_telegram(r, secrets);

    default:
        /* the configuration refuses a signature for other formats */
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "webhook signature for format %ui", format);
        return NGX_ERROR;
    }
}


/*
 * "X-Hub-Signature-256: sha256=<hex>" over the raw body.  Messenger may
 * send only the older "X-Hub-Signature: sha1=<hex>"; it is looked at only
 * when no SHA-256 header came, so a bad SHA-256 one cannot be bypassed.
 */

static ngx_int_t
ngx_http_webhook_lock_signature_meta(ngx_http_request_t *r,
    ngx_array_t *secrets, ngx_uint_t format, ngx_str_t *body)
{
    u_char            sig[NGX_HTTP_WEBHOOK_LOCK_SHA256_LEN];
    size_t            len;
    ngx_int_t         rc;
    ngx_str_t         name, prefix, value;
    const EVP_MD     *md;
    ngx_table_elt_t  *h;

    ngx_str_set(&name, "X-Hub-Signature-256");
    ngx_str_set(&prefix, "sha256=");
    md = EVP_sha256();
    len = NGX_HTTP_WEBHOOK_LOCK_SHA256_LEN;

    h = ngx_http_webhook_lock_signature_header(r, &name);

    if (h == NULL && format == NGX_HTTP_WEBHOOK_LOCK_MESSENGER) {
        ngx_str_set(&name, "X-Hub-Signature");

        h = ngx_http_webhook_lock_signature_header(r, &name);

        if (h) {
            ngx_str_set(&prefix, "sha1=");
            md = EVP_sha1();
            len = NGX_HTTP_WEBHOOK_LOCK_SHA1_LEN;

        } else {
            ngx_str_set(&name, "X-Hub-Signature-256");
        }
    }

    if (h == NULL) {
        return ngx_http_webhook_lock_signature_fail(r, &name, "missing");
    }

    value = h->value;

    if (value.len < prefix.len
        || ngx_strncasecmp(value.data, prefix.data, prefix.len) != 0)
    {
        return ngx_http_webhook_lock_signature_fail(r, &name, "malformed");
    }

    value.data += prefix.len;
    value.len -= prefix.len;

    if (ngx_http_webhook_lock_signature_hex(&value, sig, len) != NGX_OK) {
        return ngx_http_webhook_lock_signature_fail(r, &name, "malformed");
    }

    rc = ngx_http_webhook_lock_signature_verify(r, secrets, md, body, 1, sig,
                                                len);

    if (rc == NGX_DECLINED) {
        return ngx_http_webhook_lock_signature_fail(r, &name,
                                                    "does not verify");
    }

    return rc;
}


/*
 * "Tiktok-Signature: t=<timestamp>,s=<hex>" over "<timestamp>.<body>";
 * elements other than "t" and "s" are ignored, as in Stripe's scheme.
 */

static ngx_int_t
ngx_http_webhook_lock_signature_tiktok(ngx_http_request_t *r,
    ngx_array_t *secrets, ngx_str_t *body)
{
    u_char            sig[NGX_HTTP_WEBHOOK_LOCK_SHA256_LEN];
    u_char           *p, *end, *last;
    ngx_int_t         rc;
    ngx_str_t         name, t, s, *item, parts[3];
    ngx_table_elt_t  *h;

    ngx_str_set(&name, "Tiktok-Signature");

    h = ngx_http_webhook_lock_signature_header(r, &name);
    if (h == NULL) {
        return ngx_http_webhook_lock_signature_fail(r, &name, "missing");
    }

    ngx_str_null(&t);
    ngx_str_null(&s);

    p = h->value.data;
    last = p + h->value.len;

    while (p < last) {

        while (p < last && *p == ' ') {
            p++;
        }

        for (end = p; end < last && *end != ','; end++) {
            /* void */
        }

        item = NULL;

        if (end - p >= 2 && p[1] == '=') {
            if (p[0] == 't') {
                item = &t;

            } else if (p[0] == 's') {
                item = &s;
            }
        }

        if (item) {
            if (item->data) {
                return ngx_http_webhook_lock_signature_fail(r, &name,
                                                            "malformed");
            }

            item->data = p + 2;
            item->len = end - item->data;

            while (item->len && item->data[item->len - 1] == ' ') {
                item->len--;
            }
        }

        p = (end < last) ? end + 1 : last;
    }

    if (t.len == 0) {
        return ngx_http_webhook_lock_signature_fail(r, &name, "malformed");
    }

    for (p = t.data; p < t.data + t.len; p++) {
        if (*p < '0' || *p > '9') {
            return ngx_http_webhook_lock_signature_fail(r, &name,
                                                        "malformed");
        }
    }

    if (ngx_http_webhook_lock_signature_hex(&s, sig, sizeof(sig)) != NGX_OK) {
        return ngx_http_webhook_lock_signature_fail(r, &name, "malformed");
    }

    parts[0] = t;
    ngx_str_set(&parts[1], ".");
    parts[2] = *body;

    rc = ngx_http_webhook_lock_signature_verify(r, secrets, EVP_sha256(),
                                                parts, 3, sig, sizeof(sig));

    if (rc == NGX_DECLINED) {
        return ngx_http_webhook_lock_signature_fail(r, &name,
                                                    "does not verify");
    }

    return rc;
}


/*
 * "X-Twilio-Signature: <base64>" over the URL Twilio requested followed
 * by every form field's name and value, sorted by name.  A name sent
 * more than once has its values sorted and an exact repeat counted once,
 * as Twilio's own helper libraries do.
 */

static ngx_int_t
ngx_http_webhook_lock_signature_twilio(ngx_http_request_t *r,
    ngx_array_t *secrets, ngx_http_complex_value_t *url, ngx_str_t *body)
{
    u_char         sig[NGX_HTTP_WEBHOOK_LOCK_SHA1_LEN + 3];
    ngx_int_t      rc;
    ngx_str_t      name, target, detail, *parts;
    ngx_uint_t     i, n, nparts;
    ngx_array_t    fields;
    ngx_keyval_t  *kv, **sorted;

    ngx_str_set(&name, "X-Twilio-Signature");

    rc = ngx_http_webhook_lock_signature_base64(r, &name, sig,
                                                NGX_HTTP_WEBHOOK_LOCK_SHA1_LEN);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_complex_value(r, url, &target) != NGX_OK) {
        return NGX_ERROR;
    }

    n = 0;
    kv = NULL;

    if (body->len) {
        rc = ngx_http_webhook_lock_form_parse(r->pool, body->data, body->len,
                                              &fields, &detail);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "webhook signature mismatch: \"%V\" header "
                          "cannot verify a malformed body: %V",
                          &name, &detail);
            return NGX_DECLINED;
        }

        n = fields.nelts;
        kv = fields.elts;
    }

    sorted = ngx_palloc(r->pool, (n + 1) * sizeof(ngx_keyval_t *));
    if (sorted == NULL) {
        return NGX_ERROR;
    }

    parts = ngx_palloc(r->pool, (2 * n + 1) * sizeof(ngx_str_t));
    if (parts == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        sorted[i] = &kv[i];
    }

    /* qsort(), not ngx_sort(): a body may carry very many fields */

    ngx_qsort(sorted, n, sizeof(ngx_keyval_t *),
              ngx_http_webhook_lock_signature_cmp);

    parts[0] = target;
    nparts = 1;

    for (i = 0; i < n; i++) {

        if (i > 0
            && ngx_http_webhook_lock_signature_cmp(&sorted[i - 1],
                                                   &sorted[i]) == 0)
        {
            continue;   /* an exact repeat */
        }

        parts[nparts++] = sorted[i]->key;
        parts[nparts++] = sorted[i]->value;
    }

    rc = ngx_http_webhook_lock_signature_verify(r, secrets, EVP_sha1(),
                                                parts, nparts, sig,
                                                NGX_HTTP_WEBHOOK_LOCK_SHA1_LEN);

    if (rc == NGX_DECLINED) {
        /* the usual cause is a URL that differs from Twilio's */

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "webhook signature mismatch: \"%V\" header "
                      "does not verify, url \"%V\"", &name, &target);
    }

    return rc;
}


/* "X-Line-Signature: <base64>" of an HMAC-SHA256 over the raw body */

static ngx_int_t
ngx_http_webhook_lock_signature_line(ngx_http_request_t *r,
    ngx_array_t *secrets, ngx_str_t *body)
{
    u_char      sig[NGX_HTTP_WEBHOOK_LOCK_SHA256_LEN + 2];
    ngx_int_t   rc;
    ngx_str_t   name;

    ngx_str_set(&name, "X-Line-Signature");

    rc = ngx_http_webhook_lock_signature_base64(r, &name, sig,
                                            NGX_HTTP_WEBHOOK_LOCK_SHA256_LEN);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_webhook_lock_signature_verify(r, secrets, EVP_sha256(),
                                                body, 1, sig,
                                            NGX_HTTP_WEBHOOK_LOCK_SHA256_LEN);

    if (rc == NGX_DECLINED) {
        return ngx_http_webhook_lock_signature_fail(r, &name,
                                                    "does not verify");
    }

    return rc;
}


/*
 * "X-Telegram-Bot-Api-Secret-Token": the secret itself, as given to
 * setWebhook.  The SHA-256 digests of both are compared, so that the
 * comparison takes the same time whatever their lengths.
 */

static ngx_int_t
ngx_http_webhook_lock_signature_telegram(ngx_http_request_t *r,
    ngx_array_t *secrets)
{
    u_char                     want[EVP_MAX_MD_SIZE], got[EVP_MAX_MD_SIZE];
    ngx_int_t                  rc;
    ngx_str_t                  name, secret;
    ngx_uint_t                 i, tried;
    unsigned int               len;
    ngx_table_elt_t           *h;
    ngx_http_complex_value_t  *cv;

    ngx_str_set(&name, "X-Telegram-Bot-Api-Secret-Token");

    h = ngx_http_webhook_lock_signature_header(r, &name);
    if (h == NULL || h->value.len == 0) {
        return ngx_http_webhook_lock_signature_fail(r, &name, "missing");
    }

    if (EVP_Digest(h->value.data, h->value.len, got, &len, EVP_sha256(), NULL)
        != 1)
    {
        goto failed;
    }

    cv = secrets->elts;
    tried = 0;

    for (i = 0; i < secrets->nelts; i++) {

        rc = ngx_http_webhook_lock_signature_secret(r, &cv[i], &secret);
        if (rc != NGX_OK) {
            return NGX_ERROR;
        }

        if (secret.len == 0) {
            continue;
        }

        tried++;

        if (EVP_Digest(secret.data, secret.len, want, &len, EVP_sha256(),
                       NULL)
            != 1)
        {
            goto failed;
        }

        if (CRYPTO_memcmp(want, got, NGX_HTTP_WEBHOOK_LOCK_SHA256_LEN) == 0) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "webhook signature verified by secret #%ui",
                           i + 1);
            return NGX_OK;
        }
    }

    if (tried == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "webhook signature secrets are all empty");
        return NGX_ERROR;
    }

    return ngx_http_webhook_lock_signature_fail(r, &name, "does not verify");

failed:

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "webhook signature digest failed");
    ERR_clear_error();

    return NGX_ERROR;
}


/* by name, then by value; bytewise, as the helper libraries sort */

static int ngx_libc_cdecl
ngx_http_webhook_lock_signature_cmp(const void *one, const void *two)
{
    ngx_keyval_t  *a = *(ngx_keyval_t **) one;
    ngx_keyval_t  *b = *(ngx_keyval_t **) two;

    ngx_int_t  rc;

    rc = ngx_memn2cmp(a->key.data, b->key.data, a->key.len, b->key.len);

    if (rc == 0) {
        rc = ngx_memn2cmp(a->value.data, b->value.data, a->value.len,
                          b->value.len);
    }

    return (rc > 0) - (rc < 0);
}


/* the first request header of that name, in any case */

static ngx_table_elt_t *
ngx_http_webhook_lock_signature_header(ngx_http_request_t *r, ngx_str_t *name)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0 || h[i].key.len != name->len) {
            continue;
        }

        if (ngx_strncasecmp(h[i].key.data, name->data, name->len) == 0) {
            return &h[i];
        }
    }

    return NULL;
}


/* exactly "len" bytes in hex, either case */


/*
 * The header "name" as padded base64 of "len" bytes, nothing more,
 * decoded into "sig" (room for len + 2 bytes).  NGX_DECLINED: missing
 * or malformed, logged.
 */

static ngx_int_t
ngx_http_webhook_lock_signature_base64(ngx_http_request_t *r,
    ngx_str_t *name, u_char *sig, size_t len)
{
    ngx_str_t         decoded;
    ngx_table_elt_t  *h;

    h = ngx_http_webhook_lock_signature_header(r, name);
    if (h == NULL) {
        return ngx_http_webhook_lock_signature_fail(r, name, "missing");
    }

    decoded.data = sig;

    if (h->value.len != ngx_base64_encoded_length(len)
        || ngx_decode_base64(&decoded, &h->value) != NGX_OK
        || decoded.len != len)
    {
        return ngx_http_webhook_lock_signature_fail(r, name, "malformed");
    }

    return NGX_OK;
}

static ngx_int_t
ngx_http_webhook_lock_signature_hex(ngx_str_t *hex, u_char *out, size_t len)
{
    size_t     i;
    ngx_int_t  n;

    if (hex->len != 2 * len) {
        return NGX_DECLINED;
    }

    for (i = 0; i < len; i++) {
        n = ngx_hextoi(&hex->data[2 * i], 2);
        if (n == NGX_ERROR) {
            return NGX_DECLINED;
        }

        out[i] = (u_char) n;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_webhook_lock_signature_verify(ngx_http_request_t *r,
    ngx_array_t *secrets, const EVP_MD *md, ngx_str_t *parts,
    ngx_uint_t nparts, u_char *sig, size_t len)
{
    u_char                     mac[EVP_MAX_MD_SIZE];
    ngx_int_t                  rc;
    ngx_str_t                  secret;
    ngx_uint_t                 i, tried;
    ngx_connection_t          *c;
    ngx_http_complex_value_t  *cv;

    c = r->connection;
    cv = secrets->elts;
    tried = 0;

    for (i = 0; i < secrets->nelts; i++) {

        rc = ngx_http_webhook_lock_signature_secret(r, &cv[i], &secret);
        if (rc != NGX_OK) {
            return NGX_ERROR;
        }

        if (secret.len == 0) {
            continue;
        }

        tried++;

        if (ngx_http_webhook_lock_signature_hmac(c->log, md, &secret, parts,
                                                 nparts, mac)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (CRYPTO_memcmp(mac, sig, len) == 0) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "webhook signature verified by secret #%ui",
                           i + 1);
            return NGX_OK;
        }
    }

    if (tried == 0) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "webhook signature secrets are all empty");
        return NGX_ERROR;
    }

    return NGX_DECLINED;
}


/*
 * The script engine and map print the values they produce at debug
 * level: no debug line while a secret is evaluated.
 */

static ngx_int_t
ngx_http_webhook_lock_signature_secret(ngx_http_request_t *r,
    ngx_http_complex_value_t *cv, ngx_str_t *secret)
{
    ngx_int_t    rc;
    ngx_uint_t   level;
    ngx_log_t   *log;

    log = r->connection->log;

    level = log->log_level;
    log->log_level &= ~NGX_LOG_DEBUG_ALL;

    rc = ngx_http_complex_value(r, cv, secret);

    log->log_level = level;

    return rc;
}


/* HMAC over the parts in order, without joining them into one buffer */

#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)

static ngx_int_t
ngx_http_webhook_lock_signature_hmac(ngx_log_t *log, const EVP_MD *md,
    ngx_str_t *key, ngx_str_t *parts, ngx_uint_t nparts, u_char *mac)
{
    size_t        len;
    ngx_uint_t    i;
    OSSL_PARAM    params[2];
    EVP_MAC_CTX  *ctx;

    static EVP_MAC  *hmac;         /* fetched once per process */

    if (hmac == NULL) {
        hmac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
        if (hmac == NULL) {
            ngx_log_error(NGX_LOG_ALERT, log, 0, "EVP_MAC_fetch() failed");
            ERR_clear_error();
            return NGX_ERROR;
        }
    }

    ctx = EVP_MAC_CTX_new(hmac);
    if (ctx == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "EVP_MAC_CTX_new() failed");
        ERR_clear_error();
        return NGX_ERROR;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                         (char *) EVP_MD_get0_name(md), 0);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_MAC_init(ctx, key->data, key->len, params) != 1) {
        goto failed;
    }

    for (i = 0; i < nparts; i++) {
        if (parts[i].len
            && EVP_MAC_update(ctx, parts[i].data, parts[i].len) != 1)
        {
            goto failed;
        }
    }

    if (EVP_MAC_final(ctx, mac, &len, EVP_MAX_MD_SIZE) != 1) {
        goto failed;
    }

    EVP_MAC_CTX_free(ctx);

    return NGX_OK;

failed:

    ngx_log_error(NGX_LOG_ALERT, log, 0, "webhook signature HMAC failed");
    ERR_clear_error();
    EVP_MAC_CTX_free(ctx);

    return NGX_ERROR;
}

#else

static ngx_int_t
ngx_http_webhook_lock_signature_hmac(ngx_log_t *log, const EVP_MD *md,
    ngx_str_t *key, ngx_str_t *parts, ngx_uint_t nparts, u_char *mac)
{
    HMAC_CTX      *ctx;
    ngx_uint_t     i;
    unsigned int   len;

    ctx = HMAC_CTX_new();
    if (ctx == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "HMAC_CTX_new() failed");
        ERR_clear_error();
        return NGX_ERROR;
    }

    if (HMAC_Init_ex(ctx, key->data, key->len, md, NULL) != 1) {
        goto failed;
    }

    for (i = 0; i < nparts; i++) {
        if (parts[i].len
            && HMAC_Update(ctx, parts[i].data, parts[i].len) != 1)
        {
            goto failed;
        }
    }

    if (HMAC_Final(ctx, mac, &len) != 1) {
        goto failed;
    }

    HMAC_CTX_free(ctx);

    return NGX_OK;

failed:

    ngx_log_error(NGX_LOG_ALERT, log, 0, "webhook signature HMAC failed");
    ERR_clear_error();
    HMAC_CTX_free(ctx);

    return NGX_ERROR;
}

#endif


static ngx_int_t
ngx_http_webhook_lock_signature_fail(ngx_http_request_t *r, ngx_str_t *name,
    char *reason)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "webhook signature mismatch: \"%V\" header %s",
                  name, reason);

    return NGX_DECLINED;
}
