
/*
 * Copyright (C) webhook_lock authors
 */


#ifndef _NGX_SHIM_H_INCLUDED_
#define _NGX_SHIM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * The fuzz targets' side of t/fuzz/ngx_shim.c.  Memory never runs out
 * there (an allocation that fails aborts), so NGX_ERROR and
 * NGX_CONF_ERROR from the code under test are bugs.
 */

extern ngx_log_t  ngx_shim_log;

ngx_conf_t *ngx_shim_conf(ngx_pool_t *pool);


#define ngx_shim_assert(expr)                                                \
    do {                                                                     \
        if (!(expr)) {                                                       \
            fprintf(stderr, "%s:%d: assertion failed: %s\n",                 \
                    __FILE__, __LINE__, #expr);                              \
            abort();                                                         \
        }                                                                    \
    } while (0)


#endif /* _NGX_SHIM_H_INCLUDED_ */
