/*
 * acl_device.c - devices and contexts of the simulated AscendCL runtime.
 */
#include "sim_internal.h"

/* ------------------------------------------------------------------------ */
/* contexts                                                                 */
/* ------------------------------------------------------------------------ */

/* The calling thread's current context, or NULL.  Caller holds g_lock. */
struct sim_ctx *current_ctx_locked(void)
{
    struct sim_ctx *want = tls_ctx;
    if (want == NULL)
        return NULL;
    for (struct sim_ctx *c = g_ctx_list; c != NULL; c = c->next)
        if (c == want && c->gen == tls_ctx_gen)
            return c;
    tls_ctx = NULL;
    return NULL;
}

static struct sim_ctx *find_ctx_locked(const void *handle)
{
    for (struct sim_ctx *c = g_ctx_list; c != NULL; c = c->next)
        if ((const void *)c == handle)
            return c;
    return NULL;
}

void set_current(struct sim_ctx *c)
{
    tls_ctx = c;
    tls_ctx_gen = c != NULL ? c->gen : 0;
}

static struct sim_ctx *ctx_new_locked(int device, bool is_default)
{
    struct sim_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->magic = CTX_MAGIC;
    c->gen = g_next_gen++;
    c->device = device;
    c->is_default = is_default;
    c->next = g_ctx_list;
    g_ctx_list = c;
    return c;
}

/* ------------------------------------------------------------------------ */
/* devices                                                                  */
/* ------------------------------------------------------------------------ */

aclError aclrtSetDevice(int32_t deviceId)
{
    pthread_rwlock_wrlock(&g_lock);
    if (!g_initialized) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_UNINITIALIZE, "aclrtSetDevice", "call aclInit first");
    }
    if (deviceId < 0 || deviceId >= g_cfg.ndev) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "aclrtSetDevice", "device %d is not in 0..%d", deviceId,
                    g_cfg.ndev - 1);
    }
    struct sim_device *d = &g_dev[deviceId];
    if (d->default_ctx == NULL) {
        d->default_ctx = ctx_new_locked(deviceId, true);
        if (d->default_ctx == NULL) {
            pthread_rwlock_unlock(&g_lock);
            return fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, "aclrtSetDevice", "out of memory");
        }
    }
    d->refcnt++;
    set_current(d->default_ctx);
    pthread_rwlock_unlock(&g_lock);
    return ACL_SUCCESS;
}

static aclError reset_device(int32_t deviceId, bool force, const char *api)
{
    struct sim_stream *streams = NULL;

    pthread_rwlock_wrlock(&g_lock);
    if (!g_initialized) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_UNINITIALIZE, api, "call aclInit first");
    }
    if (deviceId < 0 || deviceId >= g_cfg.ndev) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, api, "device %d is not in 0..%d", deviceId, g_cfg.ndev - 1);
    }
    struct sim_device *d = &g_dev[deviceId];
    if (d->refcnt > 0 && (force || --d->refcnt == 0)) {
        d->refcnt = 0;
        if (d->default_ctx != NULL)
            ctx_destroy_locked(d->default_ctx, &streams);
    }
    pthread_rwlock_unlock(&g_lock);
    shutdown_stream_list(streams, false);
    return ACL_SUCCESS;
}

aclError aclrtResetDevice(int32_t deviceId)
{
    return reset_device(deviceId, false, "aclrtResetDevice");
}

aclError aclrtResetDeviceForce(int32_t deviceId)
{
    return reset_device(deviceId, true, "aclrtResetDeviceForce");
}

aclError aclrtGetDevice(int32_t *deviceId)
{
    if (deviceId == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtGetDevice", "deviceId is NULL");
    pthread_rwlock_rdlock(&g_lock);
    struct sim_ctx *c = current_ctx_locked();
    int dev = c != NULL ? c->device : -1;
    pthread_rwlock_unlock(&g_lock);
    if (dev < 0)
        return fail(ACL_ERROR_RT_CONTEXT_NULL, "aclrtGetDevice", "no device set for this thread");
    *deviceId = dev;
    return ACL_SUCCESS;
}

aclError aclrtGetDeviceCount(uint32_t *count)
{
    if (count == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtGetDeviceCount", "count is NULL");
    config_ensure();
    *count = (uint32_t)g_cfg.ndev;
    return ACL_SUCCESS;
}

aclError aclrtGetRunMode(aclrtRunMode *runMode)
{
    if (runMode == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtGetRunMode", "runMode is NULL");
    *runMode = ACL_HOST;
    return ACL_SUCCESS;
}

const char *aclrtGetSocName(void)
{
    config_ensure();
    return g_cfg.soc;
}

static aclError synchronize_device(void)
{
    int32_t dev;
    pthread_rwlock_rdlock(&g_lock);
    struct sim_ctx *c = current_ctx_locked();
    dev = c != NULL ? c->device : -1;
    pthread_rwlock_unlock(&g_lock);
    if (dev < 0)
        return fail(ACL_ERROR_RT_CONTEXT_NULL, "aclrtSynchronizeDevice", "no device set for this thread");
    drain_streams(dev);
    return ACL_SUCCESS;
}

aclError aclrtSynchronizeDevice(void)
{
    aclError ret = synchronize_device();
    if (sim_log_wants(SIM_FN_aclrtSynchronizeDevice))
        sim_log_line("aclrtSynchronizeDevice ret=%d\n", ret);
    return ret;
}

/* ------------------------------------------------------------------------ */
/* contexts                                                                 */
/* ------------------------------------------------------------------------ */

aclError aclrtCreateContext(aclrtContext *context, int32_t deviceId)
{
    if (context == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtCreateContext", "context is NULL");
    pthread_rwlock_wrlock(&g_lock);
    if (!g_initialized) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_UNINITIALIZE, "aclrtCreateContext", "call aclInit first");
    }
    if (deviceId < 0 || deviceId >= g_cfg.ndev) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "aclrtCreateContext", "device %d is not in 0..%d", deviceId,
                    g_cfg.ndev - 1);
    }
    struct sim_ctx *c = ctx_new_locked(deviceId, false);
    if (c != NULL)
        set_current(c);
    pthread_rwlock_unlock(&g_lock);
    if (c == NULL)
        return fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, "aclrtCreateContext", "out of memory");
    *context = c;
    return ACL_SUCCESS;
}

aclError aclrtDestroyContext(aclrtContext context)
{
    struct sim_stream *streams = NULL;
    if (context == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtDestroyContext", "context is NULL");
    pthread_rwlock_wrlock(&g_lock);
    struct sim_ctx *c = find_ctx_locked(context);
    if (c == NULL || c->is_default) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtDestroyContext", "%p is not a context created by aclrtCreateContext",
                    context);
    }
    ctx_destroy_locked(c, &streams);
    pthread_rwlock_unlock(&g_lock);
    shutdown_stream_list(streams, false);
    return ACL_SUCCESS;
}

aclError aclrtSetCurrentContext(aclrtContext context)
{
    if (context == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtSetCurrentContext", "context is NULL");
    pthread_rwlock_rdlock(&g_lock);
    struct sim_ctx *c = find_ctx_locked(context);
    if (c != NULL)
        set_current(c);
    pthread_rwlock_unlock(&g_lock);
    if (c == NULL)
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtSetCurrentContext", "%p is not a live context", context);
    return ACL_SUCCESS;
}

aclError aclrtGetCurrentContext(aclrtContext *context)
{
    if (context == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtGetCurrentContext", "context is NULL");
    pthread_rwlock_rdlock(&g_lock);
    struct sim_ctx *c = current_ctx_locked();
    pthread_rwlock_unlock(&g_lock);
    if (c == NULL)
        return fail(ACL_ERROR_RT_CONTEXT_NULL, "aclrtGetCurrentContext", "no current context");
    *context = c;
    return ACL_SUCCESS;
}

