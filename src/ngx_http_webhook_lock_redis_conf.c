
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_webhook_lock_redis_conf.h"
#include "ngx_http_webhook_lock_redis_tls.h"


#define NGX_HTTP_WEBHOOK_LOCK_REDIS_PORT     6379
#define NGX_HTTP_WEBHOOK_LOCK_SENTINEL_PORT  26379


static char *ngx_http_webhook_lock_redis_conf_url(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf, ngx_str_t *url);
static char *ngx_http_webhook_lock_redis_conf_userinfo(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf, ngx_str_t *userinfo);
static char *ngx_http_webhook_lock_redis_conf_addr(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_addr_t *addr, ngx_str_t *text,
    in_port_t default_port);
static char *ngx_http_webhook_lock_redis_conf_sentinels(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf, ngx_str_t *list);
static ngx_int_t ngx_http_webhook_lock_redis_conf_unescape(ngx_pool_t *pool,
    ngx_str_t *dst, ngx_str_t *src);
static char *ngx_http_webhook_lock_redis_conf_resolve(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf,
    ngx_http_webhook_lock_redis_addr_t *addr);
static ngx_int_t ngx_http_webhook_lock_redis_conf_param(ngx_str_t *value,
    const char *name, ngx_str_t *to);


void
ngx_http_webhook_lock_redis_conf_create(
    ngx_http_webhook_lock_redis_conf_t *rcf)
{
    rcf->db = NGX_CONF_UNSET;
    rcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    rcf->timeout = NGX_CONF_UNSET_MSEC;
    rcf->max_pending = NGX_CONF_UNSET_UINT;
    rcf->tls_verify = NGX_CONF_UNSET;
}


/*
 * webhook_redis redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB] params...
 * webhook_redis HOST:PORT | unix:/PATH params...
 */

char *
ngx_http_webhook_lock_redis_conf_parse(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf)
{
    char        *rv;
    ngx_str_t   *value, s, password;
    ngx_int_t    n;
    ngx_uint_t   i, url;

    if (rcf->name.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rcf->file = cf->conf_file->file.name.data;
    rcf->line = cf->conf_file->line;

    url = 0;

    if (ngx_strncmp(value[1].data, "redis://", 8) == 0
        || ngx_strncmp(value[1].data, "rediss://", 9) == 0)
    {
        url = 1;

        rv = ngx_http_webhook_lock_redis_conf_url(cf, rcf, &value[1]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

    } else {
        rv = ngx_http_webhook_lock_redis_conf_addr(cf, &rcf->server,
                                                   &value[1], 0);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        rcf->name = value[1];
    }

    ngx_str_null(&password);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_http_webhook_lock_redis_conf_param(&value[i], "password=",
                                                   &password)
            == NGX_OK)
        {
            if (password.len == 0) {
                goto invalid;
            }

            /* as REDIS_PASSWORD beside REDIS_URL: it wins */

            rcf->password = password;
            continue;
        }

        if (ngx_http_webhook_lock_redis_conf_param(&value[i], "db=", &s)
            == NGX_OK)
        {
            n = ngx_atoi(s.data, s.len);
            if (n == NGX_ERROR) {
                goto invalid;
            }

            rcf->db = n;
            continue;
        }

        if (ngx_http_webhook_lock_redis_conf_param(&value[i],
                                                   "connect_timeout=", &s)
            == NGX_OK)
        {
            rcf->connect_timeout = ngx_parse_time(&s, 0);
            if (rcf->connect_timeout == (ngx_msec_t) NGX_ERROR
                || rcf->connect_timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_http_webhook_lock_redis_conf_param(&value[i], "timeout=", &s)
            == NGX_OK)
        {
            rcf->timeout = ngx_parse_time(&s, 0);
            if (rcf->timeout == (ngx_msec_t) NGX_ERROR || rcf->timeout == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_http_webhook_lock_redis_conf_param(&value[i], "max_pending=",
                                                   &s)
            == NGX_OK)
        {
            n = ngx_atoi(s.data, s.len);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            rcf->max_pending = n;
            continue;
        }

        if (ngx_http_webhook_lock_redis_conf_param(&value[i], "sentinels=",
                                                   &s)
            == NGX_OK)
        {
            if (!url) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"sentinels=\" needs a redis:// URL "
                                   "with the master name as its host");
                return NGX_CONF_ERROR;
            }

            rv = ngx_http_webhook_lock_redis_conf_sentinels(cf, rcf, &s);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        if (ngx_http_webhook_lock_redis_conf_param(&value[i],
                                                   "sentinel_password=",
                                                   &rcf->sentinel_password)
            == NGX_OK)
        {
            if (rcf->sentinel_password.len == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_http_webhook_lock_redis_conf_param(&value[i], "tls_verify=",
                                                   &s)
            == NGX_OK)
        {
            if (s.len == 2 && ngx_strncmp(s.data, "on", 2) == 0) {
                rcf->tls_verify = 1;

            } else if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
                rcf->tls_verify = 0;

            } else {
                goto invalid;
            }

            goto tls;
        }

        if (ngx_http_webhook_lock_redis_conf_param(&value[i], "tls_ca=",
                                                   &rcf->tls_ca)
            == NGX_OK
            || ngx_http_webhook_lock_redis_conf_param(&value[i], "tls_name=",
                                                      &rcf->tls_name)
               == NGX_OK
            || ngx_http_webhook_lock_redis_conf_param(&value[i], "tls_cert=",
                                                      &rcf->tls_cert)
               == NGX_OK
            || ngx_http_webhook_lock_redis_conf_param(&value[i], "tls_key=",
                                                      &rcf->tls_key)
               == NGX_OK)
        {
            if (value[i].data[value[i].len - 1] == '=') {
                goto invalid;
            }

            goto tls;
        }

        goto invalid;

    tls:

        if (!rcf->tls) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" needs a rediss:// URL", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if ((rcf->tls_cert.len == 0) != (rcf->tls_key.len == 0)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tls_cert=\" and \"tls_key=\" go together");
        return NGX_CONF_ERROR;
    }

    if (rcf->sentinels && rcf->tls) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"sentinels=\" takes a redis:// URL: Sentinel "
                           "over TLS is not supported");
        return NGX_CONF_ERROR;
    }

    if (rcf->sentinels == NULL && rcf->sentinel_password.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"sentinel_password=\" without \"sentinels=\"");
        return NGX_CONF_ERROR;
    }

    if (rcf->user.len && rcf->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the user in \"%V\" has no password", &rcf->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    /* a password is not echoed into the log */

    if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
        ngx_str_set(&value[i], "password=");

    } else if (ngx_strncmp(value[i].data, "sentinel_password=", 18) == 0) {
        ngx_str_set(&value[i], "sentinel_password=");
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_webhook_lock_redis_conf_url(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf, ngx_str_t *url)
{
    u_char     *p, *last, *authority, *at, *path, *query, *colon;
    char       *rv;
    size_t      scheme, user;
    ngx_int_t   n;
    ngx_str_t   userinfo, hostport;

    rcf->tls = (url->data[5] == 's');
    scheme = rcf->tls ? sizeof("rediss://") - 1 : sizeof("redis://") - 1;

    authority = url->data + scheme;
    last = url->data + url->len;

    for (p = authority; p < last; p++) {
        if (*p == '/' || *p == '?' || *p == '#') {
            break;
        }
    }

    path = p;

    /* the last "@": a password may hold one unescaped */

    at = NULL;

    for (p = authority; p < path; p++) {
        if (*p == '@') {
            at = p;
        }
    }

    if (at) {
        userinfo.data = authority;
        userinfo.len = at - authority;

        hostport.data = at + 1;

    } else {
        ngx_str_null(&userinfo);
        hostport.data = authority;
    }

    hostport.len = path - hostport.data;

    /* a query is refused below, and may hold a secret: kept out too */

    for (query = path; query < last; query++) {
        if (*query == '?' || *query == '#') {
            break;
        }
    }

    /* the name for logs: the URL without its password */

    colon = ngx_strlchr(userinfo.data, userinfo.data + userinfo.len, ':');
    user = colon ? (size_t) (colon - userinfo.data) : 0;

    rcf->name.len = scheme + user + (user ? 1 : 0) + hostport.len
                    + (query - path);
    rcf->name.data = ngx_pnalloc(cf->pool, rcf->name.len);
    if (rcf->name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(rcf->name.data, url->data, scheme);

    if (user) {
        p = ngx_cpymem(p, userinfo.data, user);
        *p++ = '@';
    }

    p = ngx_cpymem(p, hostport.data, hostport.len);
    ngx_memcpy(p, path, query - path);

    if (at) {
        rv = ngx_http_webhook_lock_redis_conf_userinfo(cf, rcf, &userinfo);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    if (hostport.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no host in \"%V\" of \"webhook_redis\"",
                           &rcf->name);
        return NGX_CONF_ERROR;
    }

    if (query < last) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" of \"webhook_redis\" has a query or a "
                           "fragment: give parameters after the URL",
                           &rcf->name);
        return NGX_CONF_ERROR;
    }

    if (hostport.len >= 5 && ngx_strncmp(hostport.data, "unix:", 5) == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no unix socket in a URL of \"webhook_redis\": "
                           "write unix:/PATH");
        return NGX_CONF_ERROR;
    }

    if (last - path > 1) {
        n = ngx_atoi(path + 1, last - path - 1);
        if (n == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid database in \"%V\" of "
                               "\"webhook_redis\"", &rcf->name);
            return NGX_CONF_ERROR;
        }

        rcf->db = n;
    }

    rv = ngx_http_webhook_lock_redis_conf_addr(cf, &rcf->server, &hostport,
                                           NGX_HTTP_WEBHOOK_LOCK_REDIS_PORT);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (rcf->server.port == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid host in \"%V\" of \"webhook_redis\"",
                           &rcf->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* USER:PASSWORD or :PASSWORD, percent-encoded */

static char *
ngx_http_webhook_lock_redis_conf_userinfo(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf, ngx_str_t *userinfo)
{
    u_char     *colon;
    ngx_str_t   user, password;

    colon = ngx_strlchr(userinfo->data, userinfo->data + userinfo->len, ':');

    if (colon == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the user in \"%V\" of \"webhook_redis\" has no "
                           "password: write USER:PASSWORD@ or :PASSWORD@",
                           &rcf->name);
        return NGX_CONF_ERROR;
    }

    user.data = userinfo->data;
    user.len = colon - userinfo->data;

    password.data = colon + 1;
    password.len = userinfo->data + userinfo->len - password.data;

    if (ngx_http_webhook_lock_redis_conf_unescape(cf->pool, &rcf->user, &user)
        != NGX_OK
        || ngx_http_webhook_lock_redis_conf_unescape(cf->pool, &rcf->password,
                                                     &password)
           != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid percent-encoding in the user or password "
                           "of \"webhook_redis\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* HOST[:PORT] or unix:/PATH; a name is resolved later */

static char *
ngx_http_webhook_lock_redis_conf_addr(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_addr_t *addr, ngx_str_t *text,
    in_port_t default_port)
{
    ngx_url_t   u;
    ngx_str_t   host;
#if (NGX_HAVE_INET6)
    u_char      buf[sizeof(struct in6_addr)];
#endif

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *text;
    u.default_port = default_port;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        if (u.err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in \"%V\" of \"webhook_redis\"",
                               u.err, &u.url);
        }

        return NGX_CONF_ERROR;
    }

    addr->name = *text;

    if (u.family == AF_UNIX) {
        if (default_port) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "no unix socket in a URL of \"webhook_redis\": "
                               "write unix:/PATH");
            return NGX_CONF_ERROR;
        }

        host = u.host;
        addr->port = 0;

    } else {
        if (u.port == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "no port in \"%V\" of \"webhook_redis\"",
                               &u.url);
            return NGX_CONF_ERROR;
        }

        host = u.host;

        if (host.len > 2 && host.data[0] == '[') {
            host.data++;
            host.len -= 2;
        }

        addr->port = u.port;

        /* a name: by the resolver at run time, or once at the end */

        addr->resolve = (ngx_inet_addr(host.data, host.len) == INADDR_NONE);

#if (NGX_HAVE_INET6)
        if (addr->resolve
            && ngx_inet6_addr(host.data, host.len, buf) == NGX_OK)
        {
            addr->resolve = 0;
        }
#endif
    }

    addr->host.data = ngx_pnalloc(cf->pool, host.len + 1);
    if (addr->host.data == NULL) {
        return NGX_CONF_ERROR;
    }

    *ngx_cpymem(addr->host.data, host.data, host.len) = '\0';
    addr->host.len = host.len;

    return NGX_CONF_OK;
}


static char *
ngx_http_webhook_lock_redis_conf_sentinels(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf, ngx_str_t *list)
{
    u_char                              *p, *last, *comma;
    char                                *rv;
    ngx_str_t                            one;
    ngx_http_webhook_lock_redis_addr_t  *addr;

    if (rcf->sentinels) {
        return "has \"sentinels=\" twice";
    }

    rcf->sentinels = ngx_array_create(cf->pool, 3,
                                  sizeof(ngx_http_webhook_lock_redis_addr_t));
    if (rcf->sentinels == NULL) {
        return NGX_CONF_ERROR;
    }

    p = list->data;
    last = list->data + list->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        /* "host1:port1, host2:port2", as REDIS_SENTINELS is written */

        one.data = p;
        one.len = comma - p;

        while (one.len && one.data[0] == ' ') {
            one.data++;
            one.len--;
        }

        while (one.len && one.data[one.len - 1] == ' ') {
            one.len--;
        }

        if (one.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty address in \"sentinels=%V\"", list);
            return NGX_CONF_ERROR;
        }

        addr = ngx_array_push(rcf->sentinels);
        if (addr == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(addr, sizeof(ngx_http_webhook_lock_redis_addr_t));

        rv = ngx_http_webhook_lock_redis_conf_addr(cf, addr, &one,
                                        NGX_HTTP_WEBHOOK_LOCK_SENTINEL_PORT);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        p = comma + 1;
    }

    if (rcf->sentinels->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no address in \"sentinels=\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_webhook_lock_redis_conf_unescape(ngx_pool_t *pool, ngx_str_t *dst,
    ngx_str_t *src)
{
    u_char      *p, *d, *last;
    ngx_int_t    hi, lo;

    dst->data = ngx_pnalloc(pool, src->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    d = dst->data;
    last = src->data + src->len;

    for (p = src->data; p < last; p++) {

        if (*p != '%') {
            *d++ = *p;
            continue;
        }

        if (last - p < 3) {
            return NGX_ERROR;
        }

        hi = ngx_hextoi(p + 1, 1);
        lo = ngx_hextoi(p + 2, 1);

        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            return NGX_ERROR;
        }

        *d++ = (u_char) (hi << 4 | lo);
        p += 2;
    }

    *d = '\0';
    dst->len = d - dst->data;

    return NGX_OK;
}


char *
ngx_http_webhook_lock_redis_conf_init(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf)
{
    char                                *rv;
    ngx_uint_t                           i;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_webhook_lock_redis_addr_t  *addr;

    ngx_conf_init_value(rcf->db, 0);
    ngx_conf_init_msec_value(rcf->connect_timeout, 200);
    ngx_conf_init_msec_value(rcf->timeout, 200);
    ngx_conf_init_uint_value(rcf->max_pending, 4096);
    ngx_conf_init_value(rcf->tls_verify, 1);

    if (rcf->name.len == 0) {
        return NGX_CONF_OK;
    }

    if (rcf->tls && rcf->tls_name.len == 0) {
        rcf->tls_name = rcf->server.host;
    }

    if (rcf->tls) {
        rv = ngx_http_webhook_lock_redis_tls_conf(cf, rcf);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    /*
     * The http level's resolver, wherever "resolver" is in the block;
     * without one, the core module has made a dummy by now, with no
     * name server.
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->resolver && clcf->resolver->connections.nelts) {
        rcf->resolver = clcf->resolver;
        rcf->resolver_timeout = (clcf->resolver_timeout
                                 == NGX_CONF_UNSET_MSEC)
                                ? 30000 : clcf->resolver_timeout;
        return NGX_CONF_OK;
    }

    /* the master name is the sentinels' to resolve */

    if (rcf->sentinels == NULL) {
        rv = ngx_http_webhook_lock_redis_conf_resolve(cf, rcf, &rcf->server);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        return NGX_CONF_OK;
    }

    addr = rcf->sentinels->elts;

    for (i = 0; i < rcf->sentinels->nelts; i++) {
        rv = ngx_http_webhook_lock_redis_conf_resolve(cf, rcf, &addr[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    return NGX_CONF_OK;
}


/* without a resolver, as nginx does for its upstreams: once, now */

static char *
ngx_http_webhook_lock_redis_conf_resolve(ngx_conf_t *cf,
    ngx_http_webhook_lock_redis_conf_t *rcf,
    ngx_http_webhook_lock_redis_addr_t *addr)
{
    u_char     *p;
    size_t      len;
    ngx_url_t   u;

    if (!addr->resolve) {
        return NGX_CONF_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = addr->name;
    u.default_port = addr->port;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "host not found in \"%V\" of \"webhook_redis\" in %s:%ui",
                      &addr->host, rcf->file, rcf->line);
        return NGX_CONF_ERROR;
    }

    /* hiredis takes the address as text: the first one resolved */

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, p,
                        NGX_SOCKADDR_STRLEN - 1, 0);
    p[len] = '\0';

    addr->host.data = p;
    addr->host.len = len;
    addr->resolve = 0;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_webhook_lock_redis_conf_param(ngx_str_t *value, const char *name,
    ngx_str_t *to)
{
    size_t  len;

    len = ngx_strlen(name);

    if (value->len < len || ngx_strncmp(value->data, name, len) != 0) {
        return NGX_DECLINED;
    }

    to->data = value->data + len;
    to->len = value->len - len;

    return NGX_OK;
}
