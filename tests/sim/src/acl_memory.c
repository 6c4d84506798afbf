/*
 * acl_memory.c - the memory table and the allocation functions of the simulated
 * AscendCL runtime.
 */
#include "sim_internal.h"

/* ------------------------------------------------------------------------ */
/* memory range table                                                       */
/* ------------------------------------------------------------------------ */

pthread_rwlock_t g_mem_lock = PTHREAD_RWLOCK_INITIALIZER;
struct mem_range *g_mem;
size_t g_mem_n, g_mem_cap;
size_t g_hbm_used[SIM_MAX_DEVICES];

/* Index of the first range whose base is greater than p. */
static size_t mem_upper_bound(uintptr_t p)
{
    size_t lo = 0, hi = g_mem_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g_mem[mid].base <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Returns the range containing p, or NULL.  Caller holds g_mem_lock. */
static const struct mem_range *mem_find_locked(uintptr_t p)
{
    size_t i = mem_upper_bound(p);
    if (i == 0)
        return NULL;
    const struct mem_range *r = &g_mem[i - 1];
    return p - r->base < r->size ? r : NULL;
}

static bool mem_insert(const struct mem_range *r)
{
    bool ok = true;
    pthread_rwlock_wrlock(&g_mem_lock);
    if (g_mem_n == g_mem_cap) {
        size_t cap = g_mem_cap ? g_mem_cap * 2 : 64;
        struct mem_range *m = realloc(g_mem, cap * sizeof *m);
        if (m == NULL) {
            ok = false;
            goto out;
        }
        g_mem = m;
        g_mem_cap = cap;
    }
    size_t i = mem_upper_bound(r->base);
    memmove(&g_mem[i + 1], &g_mem[i], (g_mem_n - i) * sizeof *g_mem);
    g_mem[i] = *r;
    g_mem_n++;
out:
    pthread_rwlock_unlock(&g_mem_lock);
    return ok;
}

/* Removes the allocation starting exactly at p if it has the given kind. */
static bool mem_remove(uintptr_t p, int kind)
{
    bool found = false;
    pthread_rwlock_wrlock(&g_mem_lock);
    size_t i = mem_upper_bound(p);
    if (i > 0 && g_mem[i - 1].base == p && g_mem[i - 1].kind == kind) {
        if (kind == MEM_DEVICE)
            g_hbm_used[g_mem[i - 1].device] -= g_mem[i - 1].charged;
        memmove(&g_mem[i - 1], &g_mem[i], (g_mem_n - i) * sizeof *g_mem);
        g_mem_n--;
        found = true;
    }
    pthread_rwlock_unlock(&g_mem_lock);
    return found;
}

/* aclFinalize: every tracked allocation goes back to the system. */
void mem_release_all(void)
{
    pthread_rwlock_wrlock(&g_mem_lock);
    for (size_t i = 0; i < g_mem_n; i++)
        free((void *)g_mem[i].base);
    free(g_mem);
    g_mem = NULL;
    g_mem_n = g_mem_cap = 0;
    memset(g_hbm_used, 0, sizeof g_hbm_used);
    pthread_rwlock_unlock(&g_mem_lock);
}

struct mem_class mem_classify(const void *p, size_t n)
{
    struct mem_class c = { MEM_PAGEABLE, -1, true };
    pthread_rwlock_rdlock(&g_mem_lock);
    const struct mem_range *r = mem_find_locked((uintptr_t)p);
    if (r != NULL) {
        c.kind = r->kind;
        c.device = r->device;
        c.in_bounds = n <= r->size - ((uintptr_t)p - r->base);
    }
    pthread_rwlock_unlock(&g_mem_lock);
    return c;
}

const char *mem_kind_name(int kind)
{
    return kind == MEM_DEVICE ? "device" : kind == MEM_PINNED ? "pinned" : "pageable";
}

/* ------------------------------------------------------------------------ */
/* memory                                                                   */
/* ------------------------------------------------------------------------ */

static size_t round_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy)
{
    if (devPtr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtMalloc", "devPtr is NULL");
    if (size == 0)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtMalloc", "size is 0");
    if (((unsigned)policy & 0xffu) > (unsigned)ACL_MEM_MALLOC_HUGE1G_ONLY_P2P)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtMalloc", "unknown policy %d", (int)policy);
    if (size > SIZE_MAX - SIM_DEV_ALIGN)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMalloc", "size %zu is too large", size);

    pthread_rwlock_rdlock(&g_lock);
    struct sim_ctx *c = current_ctx_locked();
    int dev = c != NULL ? c->device : -1;
    pthread_rwlock_unlock(&g_lock);
    if (dev < 0)
        return fail(ACL_ERROR_RT_CONTEXT_NULL, "aclrtMalloc", "no current context, call aclrtSetDevice first");

    size_t charged = round_up(size, SIM_DEV_ALIGN);
    pthread_rwlock_wrlock(&g_mem_lock);
    bool fits = charged <= g_cfg.hbm_total - g_hbm_used[dev];
    if (fits)
        g_hbm_used[dev] += charged;
    pthread_rwlock_unlock(&g_mem_lock);
    if (!fits)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMalloc", "device %d is out of memory (%zu bytes requested)",
                    dev, size);

    void *p = NULL;
    struct mem_range r = { 0, size, charged, MEM_DEVICE, dev };
    if (posix_memalign(&p, SIM_DEV_ALIGN, charged) == 0) {
        r.base = (uintptr_t)p;
        if (!mem_insert(&r)) {
            free(p);
            p = NULL;
        }
    } else {
        p = NULL;
    }
    if (p == NULL) {
        pthread_rwlock_wrlock(&g_mem_lock);
        g_hbm_used[dev] -= charged;
        pthread_rwlock_unlock(&g_mem_lock);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMalloc", "cannot allocate %zu bytes", size);
    }
    *devPtr = p;
    return ACL_SUCCESS;
}

/* Freed memory may still be the target of queued copies: like the hardware
 * runtime's implicit synchronisation on free, wait for outstanding work. */
aclError aclrtFree(void *devPtr)
{
    if (devPtr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtFree", "devPtr is NULL");
    struct mem_class c = mem_classify(devPtr, 0);
    if (c.kind != MEM_DEVICE)
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtFree", "%p was not returned by aclrtMalloc", devPtr);
    drain_streams(c.device);
    if (!mem_remove((uintptr_t)devPtr, MEM_DEVICE))
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtFree", "%p was not returned by aclrtMalloc", devPtr);
    free(devPtr);
    return ACL_SUCCESS;
}

aclError aclrtMallocHost(void **hostPtr, size_t size)
{
    if (hostPtr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtMallocHost", "hostPtr is NULL");
    if (size == 0)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtMallocHost", "size is 0");
    pthread_rwlock_rdlock(&g_lock);
    bool init = g_initialized;
    pthread_rwlock_unlock(&g_lock);
    if (!init)
        return fail(ACL_ERROR_UNINITIALIZE, "aclrtMallocHost", "call aclInit first");
    if (size > SIZE_MAX - SIM_HOST_ALIGN)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMallocHost", "size %zu is too large", size);

    void *p = NULL;
    size_t alloc = round_up(size, SIM_HOST_ALIGN);
    if (posix_memalign(&p, SIM_HOST_ALIGN, alloc) != 0)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMallocHost", "cannot allocate %zu bytes", size);
    struct mem_range r = { (uintptr_t)p, size, alloc, MEM_PINNED, -1 };
    if (!mem_insert(&r)) {
        free(p);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMallocHost", "out of memory");
    }
    *hostPtr = p;
    return ACL_SUCCESS;
}

aclError aclrtFreeHost(void *hostPtr)
{
    if (hostPtr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtFreeHost", "hostPtr is NULL");
    struct mem_class c = mem_classify(hostPtr, 0);
    if (c.kind != MEM_PINNED)
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtFreeHost", "%p was not returned by aclrtMallocHost", hostPtr);
    drain_streams(-1);
    if (!mem_remove((uintptr_t)hostPtr, MEM_PINNED))
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtFreeHost", "%p was not returned by aclrtMallocHost", hostPtr);
    free(hostPtr);
    return ACL_SUCCESS;
}

aclError aclrtGetMemInfo(aclrtMemAttr attr, size_t *free_bytes, size_t *total)
{
    if (free_bytes == NULL || total == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtGetMemInfo", "NULL output pointer");
    bool hbm;
    switch (attr) {
    case ACL_HBM_MEM:
    case ACL_HBM_MEM_HUGE:
    case ACL_HBM_MEM_NORMAL:
    case ACL_HBM_MEM_P2P_HUGE:
    case ACL_HBM_MEM_P2P_NORMAL:
    case ACL_HBM_MEM_HUGE1G:
    case ACL_HBM_MEM_P2P_HUGE1G:
        hbm = true;
        break;
    case ACL_DDR_MEM:
    case ACL_DDR_MEM_HUGE:
    case ACL_DDR_MEM_NORMAL:
    case ACL_DDR_MEM_P2P_HUGE:
    case ACL_DDR_MEM_P2P_NORMAL:
        hbm = false;
        break;
    default:
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtGetMemInfo", "unknown attribute %d", (int)attr);
    }
    pthread_rwlock_rdlock(&g_lock);
    struct sim_ctx *c = current_ctx_locked();
    int dev = c != NULL ? c->device : -1;
    pthread_rwlock_unlock(&g_lock);
    if (dev < 0)
        return fail(ACL_ERROR_RT_CONTEXT_NULL, "aclrtGetMemInfo", "no current context, call aclrtSetDevice first");
    if (!hbm) {
        /* Ascend 910 devices have no DDR for applications. */
        *free_bytes = 0;
        *total = 0;
        return ACL_SUCCESS;
    }
    pthread_rwlock_rdlock(&g_mem_lock);
    *total = g_cfg.hbm_total;
    *free_bytes = g_cfg.hbm_total - g_hbm_used[dev];
    pthread_rwlock_unlock(&g_mem_lock);
    return ACL_SUCCESS;
}

