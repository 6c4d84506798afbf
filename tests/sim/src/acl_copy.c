/*
 * acl_copy.c - copies and memsets of the simulated AscendCL runtime.
 */
#include "sim_internal.h"

/* ------------------------------------------------------------------------ */
/* copies and memsets                                                       */
/* ------------------------------------------------------------------------ */

/* Checks that the tracked allocations around dst and src hold count bytes. */
static aclError check_bounds(const char *api, const void *dst, const void *src, size_t count, struct mem_class *dc,
                             struct mem_class *sc)
{
    *dc = mem_classify(dst, count);
    if (!dc->in_bounds)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "%zu bytes at dst %p overrun its %s allocation", count, dst,
                    mem_kind_name(dc->kind));
    if (src != NULL) {
        *sc = mem_classify(src, count);
        if (!sc->in_bounds)
            return fail(ACL_ERROR_RT_PARAM_INVALID, api, "%zu bytes at src %p overrun its %s allocation", count, src,
                        mem_kind_name(sc->kind));
    }
    return ACL_SUCCESS;
}

static aclError memcpy_async_impl(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                                  aclrtStream stream)
{
    static const char api[] = "aclrtMemcpyAsync";
    if (count == 0)
        return ACL_SUCCESS;
    if (dst == NULL || src == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "dst %p or src %p is NULL", dst, src);
    if ((unsigned)kind > (unsigned)ACL_MEMCPY_HOST_TO_BUF_TO_DEVICE)
        return fail(ACL_ERROR_INVALID_PARAM, api, "kind %d is not a valid aclrtMemcpyKind for this API", (int)kind);
    if (count > destMax)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "count %zu > destMax %zu", count, destMax);

    struct sim_stream *s;
    aclError ret = stream_acquire(stream, api, &s);
    if (ret != ACL_SUCCESS)
        return ret;
    if (kind == ACL_MEMCPY_HOST_TO_HOST && soc_rejects_async_h2h()) {
        stream_unref(s);
        return fail(ACL_ERROR_RT_FEATURE_NOT_SUPPORT, api, "asynchronous host-to-host copies are not supported on %s",
                    g_cfg.soc);
    }
    if (dst == src) {
        stream_unref(s);
        return ACL_SUCCESS;
    }
    struct mem_class dc, sc;
    ret = check_bounds(api, dst, src, count, &dc, &sc);
    if (ret != ACL_SUCCESS) {
        stream_unref(s);
        return ret;
    }

    struct sim_task *t = task_new(TASK_COPY);
    if (t == NULL) {
        stream_unref(s);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "out of memory");
    }
    t->dst = dst;
    t->src = src;
    t->n = count;
    uint64_t seq = stream_submit(s, t);
    if (seq == 0) {
        stream_unref(s);
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "stream %p is being destroyed", stream);
    }
    /* Pageable host memory cannot be read by the DMA engine after the call
     * returns: the copy completes (behind the stream's earlier work) first. */
    if (dc.kind == MEM_PAGEABLE || sc.kind == MEM_PAGEABLE)
        stream_wait_seq(s, seq, -1);
    stream_unref(s);
    return ACL_SUCCESS;
}

aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                          aclrtStream stream)
{
    aclError ret = memcpy_async_impl(dst, destMax, src, count, kind, stream);
    sim_log_line("aclrtMemcpyAsync dst=%p destMax=%zu src=%p count=%zu kind=%d stream=%p ret=%d\n", dst, destMax,
                 src, count, (int)kind, stream, ret);
    return ret;
}

aclError current_device(const char *api, int *dev)
{
    pthread_rwlock_rdlock(&g_lock);
    struct sim_ctx *c = current_ctx_locked();
    *dev = c != NULL ? c->device : -1;
    pthread_rwlock_unlock(&g_lock);
    if (*dev < 0)
        return fail(ACL_ERROR_RT_CONTEXT_NULL, api, "no current context, call aclrtSetDevice first");
    return ACL_SUCCESS;
}

aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind)
{
    static const char api[] = "aclrtMemcpy";
    if (count == 0)
        return ACL_SUCCESS;
    if (dst == NULL || src == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "dst %p or src %p is NULL", dst, src);
    if ((unsigned)kind > (unsigned)ACL_MEMCPY_HOST_TO_BUF_TO_DEVICE)
        return fail(ACL_ERROR_INVALID_PARAM, api, "kind %d is not a valid aclrtMemcpyKind for this API", (int)kind);
    if (count > destMax)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "count %zu > destMax %zu", count, destMax);
    int dev;
    aclError ret = current_device(api, &dev);
    if (ret != ACL_SUCCESS)
        return ret;
    if (dst == src)
        return ACL_SUCCESS;
    struct mem_class dc, sc;
    ret = check_bounds(api, dst, src, count, &dc, &sc);
    if (ret != ACL_SUCCESS)
        return ret;
    uint64_t start = now_ns();
    memmove(dst, src, count);
    if (kind != ACL_MEMCPY_HOST_TO_HOST)
        model_transfer_time(start, count, g_cfg.gbps);
    return ACL_SUCCESS;
}

static aclError memset_check(const char *api, void *devPtr, size_t maxCount, size_t count, struct mem_class *dc)
{
    if (devPtr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "devPtr is NULL");
    if (count > maxCount)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "count %zu > maxCount %zu", count, maxCount);
    struct mem_class unused;
    return check_bounds(api, devPtr, NULL, count, dc, &unused);
}

aclError aclrtMemset(void *devPtr, size_t maxCount, int32_t value, size_t count)
{
    static const char api[] = "aclrtMemset";
    struct mem_class dc = { 0 };
    aclError ret = memset_check(api, devPtr, maxCount, count, &dc);
    if (ret != ACL_SUCCESS)
        return ret;
    int dev;
    ret = current_device(api, &dev);
    if (ret != ACL_SUCCESS)
        return ret;
    uint64_t start = now_ns();
    memset(devPtr, value, count);
    if (dc.kind == MEM_DEVICE)
        model_transfer_time(start, count, g_cfg.gbps);
    return ACL_SUCCESS;
}

aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, aclrtStream stream)
{
    static const char api[] = "aclrtMemsetAsync";
    struct mem_class dc = { 0 };
    aclError ret = memset_check(api, devPtr, maxCount, count, &dc);
    if (ret != ACL_SUCCESS)
        return ret;
    struct sim_stream *s;
    ret = stream_acquire(stream, api, &s);
    if (ret != ACL_SUCCESS)
        return ret;
    if (count == 0) {
        stream_unref(s);
        return ACL_SUCCESS;
    }
    struct sim_task *t = task_new(TASK_MEMSET);
    if (t == NULL) {
        stream_unref(s);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "out of memory");
    }
    t->dst = devPtr;
    t->value = value;
    t->n = count;
    uint64_t seq = stream_submit(s, t);
    if (seq != 0 && dc.kind == MEM_PAGEABLE)
        stream_wait_seq(s, seq, -1);
    stream_unref(s);
    if (seq == 0)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "stream %p is being destroyed", stream);
    return ACL_SUCCESS;
}

