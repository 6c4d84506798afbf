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

/* Overlap of [base, base+size) with a tracked range.  Caller holds g_mem_lock. */
static bool mem_overlaps_locked(uintptr_t base, size_t size)
{
    size_t i = mem_upper_bound(base);
    if (i > 0 && base - g_mem[i - 1].base < g_mem[i - 1].size)
        return true;
    return i < g_mem_n && g_mem[i].base - base < size;
}

enum insert_result { INSERT_OK, INSERT_NOMEM, INSERT_OVERLAP };

/* Adds a range; with exclusive, not if it overlaps a tracked one. */
static enum insert_result mem_insert_ex(const struct mem_range *r, bool exclusive)
{
    enum insert_result res = INSERT_OK;
    pthread_rwlock_wrlock(&g_mem_lock);
    if (exclusive && mem_overlaps_locked(r->base, r->size)) {
        res = INSERT_OVERLAP;
        goto out;
    }
    if (g_mem_n == g_mem_cap) {
        size_t cap = g_mem_cap ? g_mem_cap * 2 : 64;
        struct mem_range *m = realloc(g_mem, cap * sizeof *m);
        if (m == NULL) {
            res = INSERT_NOMEM;
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
    return res;
}

static bool mem_insert(const struct mem_range *r)
{
    return mem_insert_ex(r, false) == INSERT_OK;
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
        if (g_mem[i].kind == MEM_DEVICE || g_mem[i].kind == MEM_PINNED)
            free((void *)g_mem[i].base); /* registered ranges belong to the program */
    free(g_mem);
    g_mem = NULL;
    g_mem_n = g_mem_cap = 0;
    memset(g_hbm_used, 0, sizeof g_hbm_used);
    pthread_rwlock_unlock(&g_mem_lock);
}

struct mem_class mem_classify(const void *p, size_t n)
{
    struct mem_class c = { MEM_PAGEABLE, -1, true, 4096u };
    pthread_rwlock_rdlock(&g_mem_lock);
    const struct mem_range *r = mem_find_locked((uintptr_t)p);
    if (r != NULL) {
        c.kind = r->kind;
        c.device = r->device;
        c.page_size = r->page_size;
        c.in_bounds = n <= r->size - ((uintptr_t)p - r->base);
    }
    pthread_rwlock_unlock(&g_mem_lock);
    return c;
}

const char *mem_kind_name(int kind)
{
    switch (kind) {
    case MEM_DEVICE:
        return "device";
    case MEM_PINNED:
        return "pinned";
    case MEM_REGISTERED:
        return "registered";
    default:
        return "pageable";
    }
}

/* ------------------------------------------------------------------------ */
/* memory                                                                   */
/* ------------------------------------------------------------------------ */

static size_t round_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

/* Page size of device memory allocated with a policy. */
static uint32_t policy_page_size(aclrtMemMallocPolicy policy)
{
    switch ((unsigned)policy & 0xffu) {
    case ACL_MEM_MALLOC_NORMAL_ONLY:
    case ACL_MEM_MALLOC_NORMAL_ONLY_P2P:
        return 4096u;
    case ACL_MEM_MALLOC_HUGE1G_ONLY:
    case ACL_MEM_MALLOC_HUGE1G_ONLY_P2P:
        return 1u << 30;
    default:
        return 2u << 20;
    }
}

/* aclrtMalloc and its variants: 512-byte aligned memory of the current
 * device, charged against its HBM. */
static aclError device_malloc(const char *api, void **devPtr, size_t size, aclrtMemMallocPolicy policy)
{
    if (devPtr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "devPtr is NULL");
    if (size == 0)
        return fail(ACL_ERROR_INVALID_PARAM, api, "size is 0");
    if (((unsigned)policy & 0xffu) > (unsigned)ACL_MEM_MALLOC_HUGE1G_ONLY_P2P)
        return fail(ACL_ERROR_INVALID_PARAM, api, "unknown policy %d", (int)policy);
    if (size > SIZE_MAX - SIM_DEV_ALIGN)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "size %zu is too large", size);

    int dev;
    aclError ret = current_device(api, &dev);
    if (ret != ACL_SUCCESS)
        return ret;

    size_t charged = round_up(size, SIM_DEV_ALIGN);
    pthread_rwlock_wrlock(&g_mem_lock);
    bool fits = charged <= g_cfg.hbm_total - g_hbm_used[dev];
    if (fits)
        g_hbm_used[dev] += charged;
    pthread_rwlock_unlock(&g_mem_lock);
    if (!fits)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "device %d is out of memory (%zu bytes requested)", dev,
                    size);

    void *p = NULL;
    struct mem_range r = { 0, size, charged, MEM_DEVICE, dev, policy_page_size(policy) };
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
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "cannot allocate %zu bytes", size);
    }
    *devPtr = p;
    return ACL_SUCCESS;
}

/* The allocation a successful call returned, for the call log. */
static void *result_of(aclError ret, void **out)
{
    return ret == ACL_SUCCESS && out != NULL ? *out : NULL;
}

aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy)
{
    aclError ret = device_malloc("aclrtMalloc", devPtr, size, policy);
    if (sim_log_wants(SIM_FN_aclrtMalloc))
        sim_log_line("aclrtMalloc ptr=%p size=%zu policy=%d ret=%d\n", result_of(ret, devPtr), size, (int)policy,
                     ret);
    return ret;
}

/* Like aclrtMalloc without the runtime's 32-byte padding; the simulation
 * charges both the same. */
aclError aclrtMallocAlign32(void **devPtr, size_t size, aclrtMemMallocPolicy policy)
{
    aclError ret = device_malloc("aclrtMallocAlign32", devPtr, size, policy);
    if (sim_log_wants(SIM_FN_aclrtMallocAlign32))
        sim_log_line("aclrtMallocAlign32 ptr=%p size=%zu policy=%d ret=%d\n", result_of(ret, devPtr), size,
                     (int)policy, ret);
    return ret;
}

/* Device memory the host may cache; the simulated device memory is host
 * memory already. */
aclError aclrtMallocCached(void **devPtr, size_t size, aclrtMemMallocPolicy policy)
{
    aclError ret = device_malloc("aclrtMallocCached", devPtr, size, policy);
    if (sim_log_wants(SIM_FN_aclrtMallocCached))
        sim_log_line("aclrtMallocCached ptr=%p size=%zu policy=%d ret=%d\n", result_of(ret, devPtr), size,
                     (int)policy, ret);
    return ret;
}

/* cfg (attributes such as the module id) may be NULL; it does not change
 * where the memory comes from. */
aclError aclrtMallocWithCfg(void **devPtr, size_t size, aclrtMemMallocPolicy policy, aclrtMallocConfig *cfg)
{
    aclError ret = device_malloc("aclrtMallocWithCfg", devPtr, size, policy);
    if (sim_log_wants(SIM_FN_aclrtMallocWithCfg))
        sim_log_line("aclrtMallocWithCfg ptr=%p size=%zu policy=%d cfg=%p ret=%d\n", result_of(ret, devPtr), size,
                     (int)policy, (void *)cfg, ret);
    return ret;
}

/* Freed memory may still be the target of queued copies: like the hardware
 * runtime's implicit synchronisation on free, wait for outstanding work. */
static aclError device_free(void *devPtr)
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

aclError aclrtFree(void *devPtr)
{
    aclError ret = device_free(devPtr);
    if (sim_log_wants(SIM_FN_aclrtFree))
        sim_log_line("aclrtFree ptr=%p ret=%d\n", devPtr, ret);
    return ret;
}

static bool runtime_initialized(void)
{
    pthread_rwlock_rdlock(&g_lock);
    bool init = g_initialized;
    pthread_rwlock_unlock(&g_lock);
    return init;
}

/* aclrtMallocHost and aclrtMallocHostWithCfg: 64-byte aligned pinned memory. */
static aclError host_malloc(const char *api, void **hostPtr, uint64_t size)
{
    if (hostPtr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "hostPtr is NULL");
    if (size == 0)
        return fail(ACL_ERROR_INVALID_PARAM, api, "size is 0");
    if (!runtime_initialized())
        return fail(ACL_ERROR_UNINITIALIZE, api, "call aclInit first");
    if (size > SIZE_MAX - SIM_HOST_ALIGN)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "size %llu is too large", (unsigned long long)size);

    void *p = NULL;
    size_t alloc = round_up((size_t)size, SIM_HOST_ALIGN);
    if (posix_memalign(&p, SIM_HOST_ALIGN, alloc) != 0)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "cannot allocate %llu bytes", (unsigned long long)size);
    struct mem_range r = { (uintptr_t)p, (size_t)size, alloc, MEM_PINNED, -1, 4096u };
    if (!mem_insert(&r)) {
        free(p);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "out of memory");
    }
    *hostPtr = p;
    return ACL_SUCCESS;
}

aclError aclrtMallocHost(void **hostPtr, size_t size)
{
    aclError ret = host_malloc("aclrtMallocHost", hostPtr, size);
    if (sim_log_wants(SIM_FN_aclrtMallocHost))
        sim_log_line("aclrtMallocHost ptr=%p size=%zu ret=%d\n", result_of(ret, hostPtr), size, ret);
    return ret;
}

aclError aclrtMallocHostWithCfg(void **ptr, uint64_t size, aclrtMallocConfig *cfg)
{
    aclError ret = host_malloc("aclrtMallocHostWithCfg", ptr, size);
    if (sim_log_wants(SIM_FN_aclrtMallocHostWithCfg))
        sim_log_line("aclrtMallocHostWithCfg ptr=%p size=%llu cfg=%p ret=%d\n", result_of(ret, ptr),
                     (unsigned long long)size, (void *)cfg, ret);
    return ret;
}

static aclError host_free(void *hostPtr)
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

aclError aclrtFreeHost(void *hostPtr)
{
    aclError ret = host_free(hostPtr);
    if (sim_log_wants(SIM_FN_aclrtFreeHost))
        sim_log_line("aclrtFreeHost ptr=%p ret=%d\n", hostPtr, ret);
    return ret;
}

/* ------------------------------------------------------------------------ */
/* host registration                                                        */
/* ------------------------------------------------------------------------ */

/*
 * Registers [ptr, ptr+size) of the program's own host memory: the runtime
 * page-locks it and maps it for the current device, and treats it as pinned
 * host memory until aclrtHostUnregister.  NULL ptr or a zero size are
 * ACL_ERROR_INVALID_PARAM; a range overlapping tracked memory (an allocation
 * or another registration) is ACL_ERROR_RT_PARAM_INVALID.
 */
static aclError host_register(const char *api, void *ptr, uint64_t size)
{
    if (ptr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "ptr is NULL");
    if (size == 0)
        return fail(ACL_ERROR_INVALID_PARAM, api, "size is 0");
    if (size > UINTPTR_MAX - (uintptr_t)ptr)
        return fail(ACL_ERROR_INVALID_PARAM, api, "%llu bytes at %p wrap around the address space",
                    (unsigned long long)size, ptr);
    int dev;
    aclError ret = current_device(api, &dev);
    if (ret != ACL_SUCCESS)
        return ret;
    struct mem_range r = { (uintptr_t)ptr, (size_t)size, 0, MEM_REGISTERED, dev, 4096u };
    switch (mem_insert_ex(&r, true)) {
    case INSERT_OK:
        return ACL_SUCCESS;
    case INSERT_OVERLAP:
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "%llu bytes at %p overlap memory the runtime already tracks",
                    (unsigned long long)size, ptr);
    default:
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "out of memory");
    }
}

static aclError host_register_v1(void *ptr, uint64_t size, aclrtHostRegisterType type, void **devPtr)
{
    static const char api[] = "aclrtHostRegister";
    if (type != ACL_HOST_REGISTER_MAPPED && type != ACL_HOST_REGISTER_IOMEMORY && type != ACL_HOST_REGISTER_READONLY)
        return fail(ACL_ERROR_INVALID_PARAM, api, "unknown type %d", (int)type);
    if (devPtr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "devPtr is NULL");
    aclError ret = host_register(api, ptr, size);
    if (ret == ACL_SUCCESS)
        *devPtr = ptr; /* the device sees the range at the same address */
    return ret;
}

aclError aclrtHostRegister(void *ptr, uint64_t size, aclrtHostRegisterType type, void **devPtr)
{
    aclError ret = host_register_v1(ptr, size, type, devPtr);
    if (sim_log_wants(SIM_FN_aclrtHostRegister))
        sim_log_line("aclrtHostRegister ptr=%p size=%llu type=%d devPtr=%p ret=%d\n", ptr, (unsigned long long)size,
                     (int)type, result_of(ret, devPtr), ret);
    return ret;
}

static aclError host_register_v2(void *ptr, uint64_t size, uint32_t flag)
{
    static const char api[] = "aclrtHostRegisterV2";
    const uint32_t known = ACL_HOST_REG_MAPPED | ACL_HOST_REG_IOMEMORY | ACL_HOST_REG_READONLY | ACL_HOST_REG_PINNED;
    if ((flag & ~known) != 0)
        return fail(ACL_ERROR_INVALID_PARAM, api, "unknown flag bits 0x%x", flag & ~known);
    return host_register(api, ptr, size);
}

aclError aclrtHostRegisterV2(void *ptr, uint64_t size, uint32_t flag)
{
    aclError ret = host_register_v2(ptr, size, flag);
    if (sim_log_wants(SIM_FN_aclrtHostRegisterV2))
        sim_log_line("aclrtHostRegisterV2 ptr=%p size=%llu flag=%u ret=%d\n", ptr, (unsigned long long)size,
                     (unsigned)flag, ret);
    return ret;
}

/* Queued copies may still read the range: wait for outstanding work first. */
static aclError host_unregister(void *ptr)
{
    static const char api[] = "aclrtHostUnregister";
    if (ptr == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "ptr is NULL");
    struct mem_class c = mem_classify(ptr, 0);
    if (c.kind != MEM_REGISTERED)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "%p is not a registered host range", ptr);
    drain_streams(-1);
    if (!mem_remove((uintptr_t)ptr, MEM_REGISTERED))
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "%p is not the start of a registered host range", ptr);
    return ACL_SUCCESS;
}

aclError aclrtHostUnregister(void *ptr)
{
    aclError ret = host_unregister(ptr);
    if (sim_log_wants(SIM_FN_aclrtHostUnregister))
        sim_log_line("aclrtHostUnregister ptr=%p ret=%d\n", ptr, ret);
    return ret;
}

/* ------------------------------------------------------------------------ */
/* pointer attributes                                                       */
/* ------------------------------------------------------------------------ */

/* Where ptr lives: device memory (with its device id), pinned or registered
 * host memory (HOST), or anything else (UNREGISTERED: pageable). */
aclError aclrtPointerGetAttributes(const void *ptr, aclrtPtrAttributes *attributes)
{
    if (ptr == NULL || attributes == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtPointerGetAttributes", "ptr or attributes is NULL");
    struct mem_class c = mem_classify(ptr, 0);
    memset(attributes, 0, sizeof *attributes);
    switch (c.kind) {
    case MEM_DEVICE:
        attributes->location.type = ACL_MEM_LOCATION_TYPE_DEVICE;
        attributes->location.id = (uint32_t)c.device;
        attributes->pageSize = c.page_size;
        break;
    case MEM_PINNED:
    case MEM_REGISTERED:
        attributes->location.type = ACL_MEM_LOCATION_TYPE_HOST;
        attributes->pageSize = c.page_size;
        break;
    default:
        attributes->location.type = ACL_MEM_LOCATION_TYPE_UNREGISTERED;
        attributes->pageSize = 4096u;
        break;
    }
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

