/*
 * acl_copy.c - copies and memsets of the simulated AscendCL runtime.
 *
 * Every copy goes through one path: argument checks in the runtime's order,
 * the location/kind table (MemcpyKindReviseMap of the open-source runtime),
 * then either a stream task (asynchronous copies of device, pinned or
 * registered memory) or a copy on the calling thread (synchronous copies, and
 * asynchronous H2D/D2H copies touching pageable memory, which first
 * synchronize their stream as the runtime does).
 */
#include "sim_internal.h"

/* ------------------------------------------------------------------------ */
/* the location/kind table                                                  */
/* ------------------------------------------------------------------------ */

/* Where a pointer lives, as the runtime's table sees it: "host" is pinned or
 * registered host memory, "pageable" everything the runtime does not know. */
enum loc { LOC_HOST, LOC_DEVICE, LOC_PAGEABLE };

static enum loc loc_of(int mem_kind)
{
    switch (mem_kind) {
    case MEM_DEVICE:
        return LOC_DEVICE;
    case MEM_PINNED:
    case MEM_REGISTERED:
        return LOC_HOST;
    default:
        return LOC_PAGEABLE;
    }
}

static const char *loc_name(enum loc l)
{
    return l == LOC_HOST ? "host" : l == LOC_DEVICE ? "device" : "pageable";
}

#define K(k) (1u << (k))

struct kind_row {
    bool forced;       /* rows 1-4: the runtime uses `kind` whatever was passed */
    int kind;          /* the forced kind, or what DEFAULT becomes */
    unsigned accepted; /* rows 5-9: kinds accepted as passed */
};

/* kKindTable[src][dst], SPEC section 9. */
static const struct kind_row kKindTable[3][3] = {
    [LOC_HOST] = {
        [LOC_DEVICE] = { true, ACL_MEMCPY_HOST_TO_DEVICE, 0 },   /* row 1 */
        [LOC_HOST] = { true, ACL_MEMCPY_HOST_TO_HOST, 0 },       /* row 3 */
        [LOC_PAGEABLE] = { false, ACL_MEMCPY_HOST_TO_HOST,      /* row 7 */
                           K(ACL_MEMCPY_HOST_TO_HOST) | K(ACL_MEMCPY_HOST_TO_DEVICE) },
    },
    [LOC_DEVICE] = {
        [LOC_HOST] = { true, ACL_MEMCPY_DEVICE_TO_HOST, 0 },     /* row 2 */
        [LOC_DEVICE] = { true, ACL_MEMCPY_DEVICE_TO_DEVICE, 0 }, /* row 4 */
        [LOC_PAGEABLE] = { false, ACL_MEMCPY_DEVICE_TO_HOST,    /* row 6 */
                           K(ACL_MEMCPY_DEVICE_TO_HOST) | K(ACL_MEMCPY_DEVICE_TO_DEVICE) },
    },
    [LOC_PAGEABLE] = {
        [LOC_DEVICE] = { false, ACL_MEMCPY_HOST_TO_DEVICE,      /* row 5 */
                         K(ACL_MEMCPY_HOST_TO_DEVICE) | K(ACL_MEMCPY_DEVICE_TO_DEVICE) },
        [LOC_HOST] = { false, ACL_MEMCPY_HOST_TO_HOST,          /* row 8 */
                       K(ACL_MEMCPY_HOST_TO_HOST) | K(ACL_MEMCPY_DEVICE_TO_HOST) },
        [LOC_PAGEABLE] = { false, ACL_MEMCPY_HOST_TO_HOST,      /* row 9 */
                           K(ACL_MEMCPY_HOST_TO_HOST) | K(ACL_MEMCPY_HOST_TO_DEVICE) |
                               K(ACL_MEMCPY_DEVICE_TO_HOST) | K(ACL_MEMCPY_DEVICE_TO_DEVICE) },
    },
};

/*
 * The kind the runtime uses for a copy from src_kind to dst_kind memory
 * (enum mem_kind), or ACL_ERROR_RT_PARAM_INVALID as the runtime returns it.
 * Kinds outside 0..4 do not take part.  Rows 1-4 correct the kind silently
 * (CANN 8.x); with NPUSIM_STRICT_KIND=1 a kind other than the forced one or
 * DEFAULT is rejected, as older runtimes do.  Rows 5-9 accept the listed
 * kinds as passed and turn DEFAULT into the row's default.
 */
static aclError revise_kind(const char *api, aclrtMemcpyKind kind, int src_kind, int dst_kind, aclrtMemcpyKind *eff)
{
    *eff = kind;
    if ((unsigned)kind > (unsigned)ACL_MEMCPY_DEFAULT)
        return ACL_SUCCESS;
    enum loc sl = loc_of(src_kind), dl = loc_of(dst_kind);
    const struct kind_row *row = &kKindTable[sl][dl];
    if (row->forced) {
        if (g_cfg.strict_kind && kind != ACL_MEMCPY_DEFAULT && (int)kind != row->kind)
            return fail(ACL_ERROR_RT_PARAM_INVALID, api, "src loc type=%s, dst loc type=%s, kind=%d is invalid",
                        loc_name(sl), loc_name(dl), (int)kind);
        *eff = (aclrtMemcpyKind)row->kind;
        return ACL_SUCCESS;
    }
    if (kind == ACL_MEMCPY_DEFAULT) {
        *eff = (aclrtMemcpyKind)row->kind;
        return ACL_SUCCESS;
    }
    if ((row->accepted & K(kind)) == 0)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "src loc type=%s, dst loc type=%s, kind=%d is invalid",
                    loc_name(sl), loc_name(dl), (int)kind);
    return ACL_SUCCESS;
}

#undef K

/* ------------------------------------------------------------------------ */
/* copies                                                                   */
/* ------------------------------------------------------------------------ */

/* One copy, 1D (height 1, width = count) or 2D. */
struct copy_op {
    const char *api;
    void *dst;
    const void *src;
    size_t dpitch, spitch, width, height;
    aclrtMemcpyKind kind;
};

static size_t extent(size_t pitch, size_t width, size_t height)
{
    return pitch * (height - 1) + width;
}

static void copy_rows(const struct copy_op *op)
{
    if (op->height == 1) {
        memmove(op->dst, op->src, op->width);
        return;
    }
    for (size_t r = 0; r < op->height; r++)
        memmove((char *)op->dst + r * op->dpitch, (const char *)op->src + r * op->spitch, op->width);
}

/* Classifies both sides over their extents and applies the location/kind
 * table.  The bounds of the classification are checked later (copy_bounds),
 * after dst == src, as in the runtime. */
static aclError copy_locate(const struct copy_op *op, aclrtMemcpyKind *eff, struct mem_class *dc,
                            struct mem_class *sc)
{
    *dc = mem_classify(op->dst, extent(op->dpitch, op->width, op->height));
    *sc = mem_classify(op->src, extent(op->spitch, op->width, op->height));
    return revise_kind(op->api, op->kind, sc->kind, dc->kind, eff);
}

static aclError copy_bounds(const struct copy_op *op, const struct mem_class *dc, const struct mem_class *sc)
{
    if (!dc->in_bounds)
        return fail(ACL_ERROR_RT_PARAM_INVALID, op->api, "%zu bytes at dst %p overrun its %s allocation",
                    extent(op->dpitch, op->width, op->height), op->dst, mem_kind_name(dc->kind));
    if (!sc->in_bounds)
        return fail(ACL_ERROR_RT_PARAM_INVALID, op->api, "%zu bytes at src %p overrun its %s allocation",
                    extent(op->spitch, op->width, op->height), op->src, mem_kind_name(sc->kind));
    return ACL_SUCCESS;
}

/* A copy on the calling thread; host-to-host copies are not slowed. */
static void copy_now(const struct copy_op *op, aclrtMemcpyKind eff)
{
    uint64_t start = now_ns();
    copy_rows(op);
    if (eff != ACL_MEMCPY_HOST_TO_HOST)
        model_transfer_time(start, op->width * op->height, g_cfg.gbps);
}

/* The asynchronous path, after the checks that need no stream. */
static aclError copy_async(const struct copy_op *op, aclrtStream stream)
{
    const char *api = op->api;
    struct sim_stream *s;
    aclError ret = stream_acquire(stream, api, &s);
    if (ret != ACL_SUCCESS)
        return ret;
    aclrtMemcpyKind eff;
    struct mem_class dc, sc;
    ret = copy_locate(op, &eff, &dc, &sc);
    if (ret == ACL_SUCCESS && eff == ACL_MEMCPY_HOST_TO_HOST && soc_rejects_async_h2h())
        ret = fail(ACL_ERROR_RT_FEATURE_NOT_SUPPORT, api, "asynchronous host-to-host copies are not supported on %s",
                   g_cfg.soc);
    if (ret != ACL_SUCCESS || op->dst == op->src) {
        stream_unref(s);
        return ret;
    }
    ret = copy_bounds(op, &dc, &sc);
    if (ret != ACL_SUCCESS) {
        stream_unref(s);
        return ret;
    }

    bool pageable = dc.kind == MEM_PAGEABLE || sc.kind == MEM_PAGEABLE;
    if (pageable && eff != ACL_MEMCPY_HOST_TO_HOST && eff != ACL_MEMCPY_DEVICE_TO_DEVICE) {
        /* The DMA engine cannot reach pageable memory after the call returns:
         * the runtime synchronizes the stream and copies synchronously. */
        stream_drain(s, -1);
        stream_unref(s);
        copy_now(op, eff);
        return ACL_SUCCESS;
    }

    struct sim_task *t = task_new(op->height == 1 ? TASK_COPY : TASK_COPY2D);
    if (t == NULL) {
        stream_unref(s);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "out of memory");
    }
    t->dst = op->dst;
    t->src = op->src;
    t->n = op->width * op->height;
    t->dpitch = op->dpitch;
    t->spitch = op->spitch;
    t->width = op->width;
    t->height = op->height;
    uint64_t seq = stream_submit(s, t);
    if (seq == 0) {
        stream_unref(s);
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "stream %p is being destroyed", stream);
    }
    /* A host-to-host or device-to-device copy that touches pageable memory
     * still completes (behind the stream's earlier work) before returning. */
    if (pageable)
        stream_wait_seq(s, seq, -1);
    stream_unref(s);
    return ACL_SUCCESS;
}

/* The synchronous path, after the checks that need no context. */
static aclError copy_sync(const struct copy_op *op)
{
    int dev;
    aclError ret = current_device(op->api, &dev);
    if (ret != ACL_SUCCESS)
        return ret;
    aclrtMemcpyKind eff;
    struct mem_class dc, sc;
    ret = copy_locate(op, &eff, &dc, &sc);
    if (ret != ACL_SUCCESS || op->dst == op->src)
        return ret;
    ret = copy_bounds(op, &dc, &sc);
    if (ret != ACL_SUCCESS)
        return ret;
    copy_now(op, eff);
    return ACL_SUCCESS;
}

/* The checks every 1D copy starts with, in the runtime's order: count == 0
 * succeeds before anything else; NULL pointers and kinds outside 0..5 are
 * ACL_ERROR_INVALID_PARAM; count > destMax is ACL_ERROR_RT_PARAM_INVALID.
 * Returns 1 when the copy has nothing to do. */
static int copy1d_args(const char *api, void *dst, size_t destMax, const void *src, size_t count,
                       aclrtMemcpyKind kind, aclError *ret)
{
    *ret = ACL_SUCCESS;
    if (count == 0)
        return 1;
    if (dst == NULL || src == NULL)
        *ret = fail(ACL_ERROR_INVALID_PARAM, api, "dst %p or src %p is NULL", dst, src);
    else if ((unsigned)kind > (unsigned)ACL_MEMCPY_HOST_TO_BUF_TO_DEVICE)
        *ret = fail(ACL_ERROR_INVALID_PARAM, api, "kind %d is not a valid aclrtMemcpyKind for this API", (int)kind);
    else if (count > destMax)
        *ret = fail(ACL_ERROR_RT_PARAM_INVALID, api, "count %zu > destMax %zu", count, destMax);
    else
        return 0;
    return 1;
}

static aclError memcpy_async_impl(const char *api, void *dst, size_t destMax, const void *src, size_t count,
                                  aclrtMemcpyKind kind, aclrtStream stream)
{
    aclError ret;
    if (copy1d_args(api, dst, destMax, src, count, kind, &ret))
        return ret;
    const struct copy_op op = { api, dst, src, count, count, count, 1, kind };
    return copy_async(&op, stream);
}

aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                          aclrtStream stream)
{
    aclError ret = memcpy_async_impl("aclrtMemcpyAsync", dst, destMax, src, count, kind, stream);
    if (sim_log_wants(SIM_FN_aclrtMemcpyAsync))
        sim_log_line("aclrtMemcpyAsync dst=%p destMax=%zu src=%p count=%zu kind=%d stream=%p ret=%d\n", dst, destMax,
                     src, count, (int)kind, stream, ret);
    return ret;
}

/* Deprecated in CANN: aclrtMemcpyAsync that checks page-locking itself. */
aclError aclrtMemcpyAsyncWithCondition(void *dst, size_t destMax, const void *src, size_t count,
                                       aclrtMemcpyKind kind, aclrtStream stream)
{
    aclError ret = memcpy_async_impl("aclrtMemcpyAsyncWithCondition", dst, destMax, src, count, kind, stream);
    if (sim_log_wants(SIM_FN_aclrtMemcpyAsyncWithCondition))
        sim_log_line("aclrtMemcpyAsyncWithCondition dst=%p destMax=%zu src=%p count=%zu kind=%d stream=%p ret=%d\n",
                     dst, destMax, src, count, (int)kind, stream, ret);
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

static aclError memcpy_impl(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind)
{
    static const char api[] = "aclrtMemcpy";
    aclError ret;
    if (copy1d_args(api, dst, destMax, src, count, kind, &ret))
        return ret;
    const struct copy_op op = { api, dst, src, count, count, count, 1, kind };
    return copy_sync(&op);
}

aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind)
{
    aclError ret = memcpy_impl(dst, destMax, src, count, kind);
    if (sim_log_wants(SIM_FN_aclrtMemcpy))
        sim_log_line("aclrtMemcpy dst=%p destMax=%zu src=%p count=%zu kind=%d ret=%d\n", dst, destMax, src, count,
                     (int)kind, ret);
    return ret;
}

/*
 * The checks a 2D copy starts with: an empty matrix (width or height 0)
 * succeeds before anything else; NULL pointers, kinds outside 0..4, a width
 * wider than either pitch, or an extent that overflows are
 * ACL_ERROR_INVALID_PARAM.  Returns 1 when the copy has nothing to do.
 */
static int copy2d_args(const struct copy_op *op, aclError *ret)
{
    *ret = ACL_SUCCESS;
    if (op->width == 0 || op->height == 0)
        return 1;
    if (op->dst == NULL || op->src == NULL)
        *ret = fail(ACL_ERROR_INVALID_PARAM, op->api, "dst %p or src %p is NULL", op->dst, op->src);
    else if ((unsigned)op->kind > (unsigned)ACL_MEMCPY_DEFAULT)
        *ret = fail(ACL_ERROR_INVALID_PARAM, op->api, "kind %d is not a valid aclrtMemcpyKind for this API",
                    (int)op->kind);
    else if (op->width > op->dpitch || op->width > op->spitch)
        *ret = fail(ACL_ERROR_INVALID_PARAM, op->api, "width %zu is larger than dpitch %zu or spitch %zu", op->width,
                    op->dpitch, op->spitch);
    else if (op->height - 1 > (SIZE_MAX - op->width) / op->dpitch ||
             op->height - 1 > (SIZE_MAX - op->width) / op->spitch)
        *ret = fail(ACL_ERROR_INVALID_PARAM, op->api, "the %zu x %zu matrix overflows the address space", op->width,
                    op->height);
    else
        return 0;
    return 1;
}

aclError aclrtMemcpy2d(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                       aclrtMemcpyKind kind)
{
    const struct copy_op op = { "aclrtMemcpy2d", dst, src, dpitch, spitch, width, height, kind };
    aclError ret;
    if (!copy2d_args(&op, &ret))
        ret = copy_sync(&op);
    if (sim_log_wants(SIM_FN_aclrtMemcpy2d))
        sim_log_line("aclrtMemcpy2d dst=%p dpitch=%zu src=%p spitch=%zu width=%zu height=%zu kind=%d ret=%d\n", dst,
                     dpitch, src, spitch, width, height, (int)kind, ret);
    return ret;
}

aclError aclrtMemcpy2dAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                            aclrtMemcpyKind kind, aclrtStream stream)
{
    const struct copy_op op = { "aclrtMemcpy2dAsync", dst, src, dpitch, spitch, width, height, kind };
    aclError ret;
    if (!copy2d_args(&op, &ret))
        ret = copy_async(&op, stream);
    if (sim_log_wants(SIM_FN_aclrtMemcpy2dAsync))
        sim_log_line("aclrtMemcpy2dAsync dst=%p dpitch=%zu src=%p spitch=%zu width=%zu height=%zu kind=%d stream=%p "
                     "ret=%d\n",
                     dst, dpitch, src, spitch, width, height, (int)kind, stream, ret);
    return ret;
}

/* ------------------------------------------------------------------------ */
/* memsets                                                                  */
/* ------------------------------------------------------------------------ */

/* Checks that the tracked allocation around p holds n bytes. */
static aclError check_bounds(const char *api, const void *p, size_t n, struct mem_class *c)
{
    *c = mem_classify(p, n);
    if (!c->in_bounds)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "%zu bytes at dst %p overrun its %s allocation", n, p,
                    mem_kind_name(c->kind));
    return ACL_SUCCESS;
}

static aclError memset_check(const char *api, void *devPtr, size_t maxCount, size_t count, struct mem_class *dc)
{
    if (devPtr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "devPtr is NULL");
    if (count > maxCount)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "count %zu > maxCount %zu", count, maxCount);
    return check_bounds(api, devPtr, count, dc);
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

static aclError memset_async_impl(void *devPtr, size_t maxCount, int32_t value, size_t count, aclrtStream stream)
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


aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, aclrtStream stream)
{
    aclError ret = memset_async_impl(devPtr, maxCount, value, count, stream);
    if (sim_log_wants(SIM_FN_aclrtMemsetAsync))
        sim_log_line("aclrtMemsetAsync devPtr=%p maxCount=%zu value=%d count=%zu stream=%p ret=%d\n", devPtr, maxCount,
                     (int)value, count, stream, ret);
    return ret;
}
