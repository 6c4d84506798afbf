/*
 * acl_sim.c - simulated AscendCL runtime (libascendcl.so).
 *
 * Implements the documented host-side behaviour of the Ascend runtime without
 * hardware, for the npushim tests and demos:
 *   - devices and contexts: aclrtSetDevice makes the device's default context
 *     current for the calling thread; contexts are thread-local;
 *   - memory: aclrtMalloc (device) and aclrtMallocHost (pinned) are tracked
 *     allocations in a range table; everything else is pageable host memory;
 *   - streams: each stream is a FIFO worker thread that executes copies,
 *     memsets, event records and event waits in submission order;
 *   - aclrtMemcpyAsync checks its arguments in the runtime's order, completes
 *     pageable copies before returning and only submits the others;
 *   - events record a CLOCK_MONOTONIC timestamp when their stream reaches them;
 *   - NPUSIM_GBPS gives every copy a duration, so timelines look realistic.
 *
 * Errors are reported only through return codes (and aclGetRecentErrMsg);
 * NPUSIM_DEBUG=1 also prints them on stderr.  Nothing is written to stdout.
 *
 * Internal calls never go through the exported entry points, so an
 * interposer on aclrtMemcpyAsync sees exactly the program's own calls.
 *
 * Lock order: g_lock -> g_mem_lock; g_lock -> stream->mu.  g_ev_mu is a leaf.
 */
#define _GNU_SOURCE
#include "acl/acl.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim_log.h"

#define SIM_MAX_DEVICES 64
#define SIM_DEFAULT_DEVICES 8
#define SIM_DEFAULT_SOC "Ascend910B1"
#define SIM_DEFAULT_HBM_GIB 64
#define SIM_DEV_ALIGN 512
#define SIM_HOST_ALIGN 64
#define SIM_CONFIG_MAX (1 << 20)
#define SIM_STREAM_DEPTH 4096 /* queued tasks per stream before submission blocks */

#define CTX_MAGIC 0x4e504358u    /* "NPCX" */
#define STREAM_MAGIC 0x4e505354u /* "NPST" */
#define EVENT_MAGIC 0x4e504556u  /* "NPEV" */

/* ------------------------------------------------------------------------ */
/* configuration                                                            */
/* ------------------------------------------------------------------------ */

struct sim_config {
    int ndev;
    char soc[64];
    double gbps;      /* bytes per nanosecond == GB/s; 0 = copies are instant */
    size_t hbm_total; /* bytes of HBM per device */
};

static struct sim_config g_cfg;
static bool g_cfg_loaded;
static pthread_mutex_t g_cfg_mu = PTHREAD_MUTEX_INITIALIZER;

static void config_load_locked(void)
{
    struct sim_config c;
    const char *v;

    c.ndev = SIM_DEFAULT_DEVICES;
    v = getenv("NPUSIM_DEVICES");
    if (v != NULL && *v != '\0') {
        char *end;
        long n = strtol(v, &end, 10);
        if (*end == '\0' && n >= 1 && n <= SIM_MAX_DEVICES)
            c.ndev = (int)n;
        else
            sim_debug("NPUSIM_DEVICES=%s is not in 1..%d, using %d", v, SIM_MAX_DEVICES, c.ndev);
    }

    v = getenv("NPUSIM_SOC");
    snprintf(c.soc, sizeof c.soc, "%s", (v != NULL && *v != '\0') ? v : SIM_DEFAULT_SOC);

    c.gbps = 0.0;
    v = getenv("NPUSIM_GBPS");
    if (v != NULL && *v != '\0') {
        char *end;
        double g = strtod(v, &end);
        if (*end == '\0' && g >= 0.0)
            c.gbps = g;
        else
            sim_debug("NPUSIM_GBPS=%s is not a non-negative number, copies are instant", v);
    }

    c.hbm_total = (size_t)SIM_DEFAULT_HBM_GIB << 30;
    v = getenv("NPUSIM_HBM_GIB");
    if (v != NULL && *v != '\0') {
        char *end;
        unsigned long long g = strtoull(v, &end, 10);
        if (*end == '\0' && g >= 1 && g <= (1ull << 20))
            c.hbm_total = (size_t)g << 30;
        else
            sim_debug("NPUSIM_HBM_GIB=%s is invalid, using %d", v, SIM_DEFAULT_HBM_GIB);
    }

    g_cfg = c;
    g_cfg_loaded = true;
}

/* Loads the configuration if aclInit has not done so yet. */
static void config_ensure(void)
{
    pthread_mutex_lock(&g_cfg_mu);
    if (!g_cfg_loaded)
        config_load_locked();
    pthread_mutex_unlock(&g_cfg_mu);
}

/* 910B and 910_93 (910C) cannot run asynchronous host-to-host copies. */
static bool soc_rejects_async_h2h(void)
{
    return strncmp(g_cfg.soc, "Ascend910B", 10) == 0 || strncmp(g_cfg.soc, "Ascend910_93", 12) == 0 ||
           strncmp(g_cfg.soc, "Ascend910C", 10) == 0;
}

/* ------------------------------------------------------------------------ */
/* error reporting                                                          */
/* ------------------------------------------------------------------------ */

static __thread char tls_err[256];
static __thread char tls_err_out[256];

__attribute__((format(printf, 3, 4)))
static aclError fail(aclError code, const char *api, const char *fmt, ...)
{
    char msg[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(tls_err, sizeof tls_err, "EE9999: %s failed, error code %d: %s", api, code, msg);
    sim_debug("%s", tls_err);
    return code;
}

const char *aclGetRecentErrMsg(void)
{
    if (tls_err[0] == '\0')
        return NULL;
    memcpy(tls_err_out, tls_err, sizeof tls_err_out);
    tls_err[0] = '\0';
    return tls_err_out;
}

/* ------------------------------------------------------------------------ */
/* time                                                                     */
/* ------------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t deadline)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline / 1000000000ull);
    ts.tv_nsec = (long)(deadline % 1000000000ull);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Makes a transfer of n bytes that started at start_ns last as long as the
 * bandwidth model says. */
static void model_transfer_time(uint64_t start_ns, size_t n, double gbps)
{
    if (gbps <= 0.0 || n == 0)
        return;
    uint64_t dur = (uint64_t)((double)n / gbps);
    sleep_until_ns(start_ns + dur);
}

/* ------------------------------------------------------------------------ */
/* objects                                                                  */
/* ------------------------------------------------------------------------ */

struct sim_stream;

struct sim_ctx {
    uint32_t magic;
    uint64_t gen; /* unique per context, guards stale thread-local pointers */
    int device;
    bool is_default;
    struct sim_stream *default_stream; /* created on first use */
    struct sim_ctx *next;
};

struct sim_event {
    uint32_t magic;
    atomic_int refs;
    uint32_t flags;
    /* protected by g_ev_mu */
    uint64_t record_seq; /* records submitted */
    uint64_t done_seq;   /* highest record reached by its stream */
    uint64_t ts_ns;      /* CLOCK_MONOTONIC time of the last completed record */
    bool has_ts;
    struct sim_event *next;
};

enum task_kind { TASK_COPY, TASK_MEMSET, TASK_RECORD, TASK_WAIT };

struct sim_task {
    enum task_kind kind;
    struct sim_task *next;
    void *dst;
    const void *src;
    size_t n;
    int value;
    struct sim_event *ev; /* holds a reference */
    uint64_t seq;
};

struct sim_stream {
    uint32_t magic;
    atomic_int refs; /* one for the registry, one per caller using it */
    struct sim_ctx *ctx;
    int device;
    double gbps;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    pthread_cond_t cv_done;
    struct sim_task *head, *tail; /* protected by mu */
    uint64_t submitted, completed; /* protected by mu */
    bool stop;                     /* protected by mu */
    atomic_bool discard;
    struct sim_stream *next; /* registry */
};

struct sim_device {
    int refcnt;
    struct sim_ctx *default_ctx;
};

/* g_lock protects: g_initialized, g_dev, the context, stream and event lists. */
static pthread_rwlock_t g_lock = PTHREAD_RWLOCK_INITIALIZER;
static bool g_initialized;
static struct sim_device g_dev[SIM_MAX_DEVICES];
static struct sim_ctx *g_ctx_list;
static struct sim_stream *g_stream_list;
static struct sim_event *g_event_list;
static uint64_t g_next_gen = 1;

/* g_ev_mu protects the mutable fields of every event. */
static pthread_mutex_t g_ev_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_ev_cv = PTHREAD_COND_INITIALIZER;

static __thread struct sim_ctx *tls_ctx;
static __thread uint64_t tls_ctx_gen;

/* ------------------------------------------------------------------------ */
/* memory range table                                                       */
/* ------------------------------------------------------------------------ */

enum mem_kind { MEM_PAGEABLE = 0, MEM_DEVICE = 1, MEM_PINNED = 2 };

struct mem_range {
    uintptr_t base;
    size_t size;
    size_t charged;
    int kind;
    int device;
};

static pthread_rwlock_t g_mem_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct mem_range *g_mem;
static size_t g_mem_n, g_mem_cap;
static size_t g_hbm_used[SIM_MAX_DEVICES];

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

struct mem_class {
    int kind;
    int device;
    bool in_bounds; /* [p, p+n) lies inside the tracked allocation */
};

static struct mem_class mem_classify(const void *p, size_t n)
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

static const char *mem_kind_name(int kind)
{
    return kind == MEM_DEVICE ? "device" : kind == MEM_PINNED ? "pinned" : "pageable";
}

/* ------------------------------------------------------------------------ */
/* contexts                                                                 */
/* ------------------------------------------------------------------------ */

/* The calling thread's current context, or NULL.  Caller holds g_lock. */
static struct sim_ctx *current_ctx_locked(void)
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

static void set_current(struct sim_ctx *c)
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
/* events                                                                   */
/* ------------------------------------------------------------------------ */

static void event_unref(struct sim_event *e)
{
    if (atomic_fetch_sub(&e->refs, 1) == 1) {
        e->magic = 0;
        free(e);
    }
}

static struct sim_event *find_event_locked(const void *handle)
{
    for (struct sim_event *e = g_event_list; e != NULL; e = e->next)
        if ((const void *)e == handle)
            return e;
    return NULL;
}

/* Looks an event up and takes a reference. */
static struct sim_event *event_acquire(const void *handle)
{
    pthread_rwlock_rdlock(&g_lock);
    struct sim_event *e = find_event_locked(handle);
    if (e != NULL)
        atomic_fetch_add(&e->refs, 1);
    pthread_rwlock_unlock(&g_lock);
    return e;
}

static bool event_complete_locked(const struct sim_event *e)
{
    return e->record_seq > 0 && e->done_seq >= e->record_seq;
}

/* ------------------------------------------------------------------------ */
/* streams                                                                  */
/* ------------------------------------------------------------------------ */

static void task_run(struct sim_stream *s, struct sim_task *t)
{
    switch (t->kind) {
    case TASK_COPY: {
        uint64_t start = now_ns();
        memmove(t->dst, t->src, t->n);
        model_transfer_time(start, t->n, s->gbps);
        break;
    }
    case TASK_MEMSET: {
        uint64_t start = now_ns();
        memset(t->dst, t->value, t->n);
        model_transfer_time(start, t->n, s->gbps);
        break;
    }
    case TASK_RECORD:
        pthread_mutex_lock(&g_ev_mu);
        t->ev->ts_ns = now_ns();
        t->ev->has_ts = true;
        if (t->seq > t->ev->done_seq)
            t->ev->done_seq = t->seq;
        pthread_cond_broadcast(&g_ev_cv);
        pthread_mutex_unlock(&g_ev_mu);
        break;
    case TASK_WAIT:
        pthread_mutex_lock(&g_ev_mu);
        while (t->ev->done_seq < t->seq && !atomic_load(&s->discard))
            pthread_cond_wait(&g_ev_cv, &g_ev_mu);
        pthread_mutex_unlock(&g_ev_mu);
        break;
    }
}

/* A task dropped by aclrtDestroyStreamForce.  A dropped record still counts
 * as reached (without a new timestamp) so nobody waits for it forever. */
static void task_cancel(struct sim_task *t)
{
    if (t->kind == TASK_RECORD) {
        pthread_mutex_lock(&g_ev_mu);
        if (t->seq > t->ev->done_seq)
            t->ev->done_seq = t->seq;
        pthread_cond_broadcast(&g_ev_cv);
        pthread_mutex_unlock(&g_ev_mu);
    }
}

static void *stream_worker(void *arg)
{
    struct sim_stream *s = arg;
    char name[16];
    snprintf(name, sizeof name, "npusim-dev%d", s->device);
    pthread_setname_np(pthread_self(), name);

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->head == NULL && !s->stop)
            pthread_cond_wait(&s->cv_work, &s->mu);
        struct sim_task *t = s->head;
        if (t == NULL)
            break;
        s->head = t->next;
        if (s->head == NULL)
            s->tail = NULL;
        pthread_mutex_unlock(&s->mu);

        if (atomic_load(&s->discard))
            task_cancel(t);
        else
            task_run(s, t);
        if (t->ev != NULL)
            event_unref(t->ev);
        free(t);

        pthread_mutex_lock(&s->mu);
        s->completed++;
        pthread_cond_broadcast(&s->cv_done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void stream_unref(struct sim_stream *s)
{
    if (atomic_fetch_sub(&s->refs, 1) == 1) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv_work);
        pthread_cond_destroy(&s->cv_done);
        s->magic = 0;
        free(s);
    }
}

/* Creates a stream of ctx and registers it.  Caller holds g_lock for writing. */
static struct sim_stream *stream_new_locked(struct sim_ctx *ctx)
{
    struct sim_stream *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->magic = STREAM_MAGIC;
    atomic_init(&s->refs, 1);
    atomic_init(&s->discard, false);
    s->ctx = ctx;
    s->device = ctx->device;
    s->gbps = g_cfg.gbps;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv_work, NULL);
    pthread_cond_init(&s->cv_done, NULL);
    if (pthread_create(&s->thread, NULL, stream_worker, s) != 0) {
        stream_unref(s);
        return NULL;
    }
    s->next = g_stream_list;
    g_stream_list = s;
    return s;
}

static bool unlink_stream_locked(struct sim_stream *s)
{
    for (struct sim_stream **pp = &g_stream_list; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            s->next = NULL;
            return true;
        }
    }
    return false;
}

static struct sim_stream *find_stream_locked(const void *handle)
{
    for (struct sim_stream *s = g_stream_list; s != NULL; s = s->next)
        if ((const void *)s == handle)
            return s;
    return NULL;
}

/* Stops an unregistered stream's worker, after its queue drains (or at once
 * with force), joins it and drops the registry's reference. */
static void stream_shutdown(struct sim_stream *s, bool force)
{
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    if (force)
        atomic_store(&s->discard, true);
    pthread_cond_broadcast(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
    if (force) {
        pthread_mutex_lock(&g_ev_mu);
        pthread_cond_broadcast(&g_ev_cv);
        pthread_mutex_unlock(&g_ev_mu);
    }
    pthread_join(s->thread, NULL);
    stream_unref(s);
}

/* Moves every registered stream matching the predicate to *out (linked via
 * next).  Caller holds g_lock for writing. */
static void collect_streams_locked(bool (*pred)(const struct sim_stream *, const void *), const void *arg,
                                   struct sim_stream **out)
{
    struct sim_stream **pp = &g_stream_list;
    while (*pp != NULL) {
        struct sim_stream *s = *pp;
        if (pred(s, arg)) {
            *pp = s->next;
            s->next = *out;
            *out = s;
        } else {
            pp = &s->next;
        }
    }
}

static bool stream_in_ctx(const struct sim_stream *s, const void *ctx)
{
    return (const void *)s->ctx == ctx;
}

static bool stream_any(const struct sim_stream *s, const void *unused)
{
    (void)s;
    (void)unused;
    return true;
}

static void shutdown_stream_list(struct sim_stream *list, bool force)
{
    while (list != NULL) {
        struct sim_stream *next = list->next;
        stream_shutdown(list, force);
        list = next;
    }
}

/* Unregisters and frees a context; its streams are moved to *streams for the
 * caller to shut down after dropping g_lock. */
static void ctx_destroy_locked(struct sim_ctx *c, struct sim_stream **streams)
{
    collect_streams_locked(stream_in_ctx, c, streams);
    for (struct sim_ctx **pp = &g_ctx_list; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (c->is_default && g_dev[c->device].default_ctx == c)
        g_dev[c->device].default_ctx = NULL;
    if (tls_ctx == c)
        set_current(NULL);
    c->magic = 0;
    free(c);
}

/* Resolves a stream argument for the calling thread and takes a reference:
 * NULL means the current context's default stream (created on first use).
 * Returns ACL_ERROR_RT_CONTEXT_NULL without a current context,
 * ACL_ERROR_RT_PARAM_INVALID for an unknown handle and
 * ACL_ERROR_RT_STREAM_CONTEXT for a stream of another device. */
static aclError stream_acquire(aclrtStream handle, const char *api, struct sim_stream **out)
{
    pthread_rwlock_rdlock(&g_lock);
    struct sim_ctx *ctx = current_ctx_locked();
    if (ctx == NULL) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_RT_CONTEXT_NULL, api, "no current context, call aclrtSetDevice first");
    }
    struct sim_stream *s;
    if (handle == NULL) {
        s = ctx->default_stream;
        if (s == NULL) {
            pthread_rwlock_unlock(&g_lock);
            pthread_rwlock_wrlock(&g_lock);
            ctx = current_ctx_locked();
            if (ctx == NULL) {
                pthread_rwlock_unlock(&g_lock);
                return fail(ACL_ERROR_RT_CONTEXT_NULL, api, "no current context");
            }
            if (ctx->default_stream == NULL)
                ctx->default_stream = stream_new_locked(ctx);
            s = ctx->default_stream;
            if (s == NULL) {
                pthread_rwlock_unlock(&g_lock);
                return fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, api, "cannot create the default stream");
            }
        }
    } else {
        s = find_stream_locked(handle);
        if (s == NULL) {
            pthread_rwlock_unlock(&g_lock);
            return fail(ACL_ERROR_RT_PARAM_INVALID, api, "stream %p is not a live stream", handle);
        }
        if (s->device != ctx->device) {
            int sdev = s->device;
            pthread_rwlock_unlock(&g_lock);
            return fail(ACL_ERROR_RT_STREAM_CONTEXT, api, "stream belongs to device %d, current device is %d",
                        sdev, ctx->device);
        }
    }
    atomic_fetch_add(&s->refs, 1);
    pthread_rwlock_unlock(&g_lock);
    *out = s;
    return ACL_SUCCESS;
}

/* Queues a task; returns its sequence number, or 0 if the stream is being
 * destroyed (the task is then freed).  Like a hardware submission queue the
 * stream holds a bounded number of tasks: a full queue blocks the caller. */
static uint64_t stream_submit(struct sim_stream *s, struct sim_task *t)
{
    uint64_t seq = 0;
    t->next = NULL;
    pthread_mutex_lock(&s->mu);
    while (!s->stop && s->submitted - s->completed >= SIM_STREAM_DEPTH)
        pthread_cond_wait(&s->cv_done, &s->mu);
    if (!s->stop) {
        if (s->tail != NULL)
            s->tail->next = t;
        else
            s->head = t;
        s->tail = t;
        seq = ++s->submitted;
        pthread_cond_signal(&s->cv_work);
    }
    pthread_mutex_unlock(&s->mu);
    if (seq == 0) {
        if (t->ev != NULL)
            event_unref(t->ev);
        free(t);
    }
    return seq;
}

/* Waits until task seq has executed; timeout_ms < 0 waits forever. */
static bool stream_wait_seq(struct sim_stream *s, uint64_t seq, int32_t timeout_ms)
{
    bool done = true;
    struct timespec deadline;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&s->mu);
    while (s->completed < seq) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&s->cv_done, &s->mu);
        } else if (pthread_cond_timedwait(&s->cv_done, &s->mu, &deadline) == ETIMEDOUT) {
            done = s->completed >= seq;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return done;
}

static bool stream_drain(struct sim_stream *s, int32_t timeout_ms)
{
    pthread_mutex_lock(&s->mu);
    uint64_t target = s->submitted;
    pthread_mutex_unlock(&s->mu);
    return stream_wait_seq(s, target, timeout_ms);
}

/* fork(): the child inherits the runtime's memory but none of its threads.  As
 * with any multi-threaded library, every lock is taken before the fork (in the
 * documented lock order) so none is inherited mid-update, and released on both
 * sides; in the child each stream gets a new worker thread and the parent's
 * queued work, which belongs to the parent's devices, is dropped. */
static void sim_fork_prepare(void)
{
    pthread_rwlock_wrlock(&g_lock);
    pthread_mutex_lock(&g_cfg_mu);
    pthread_rwlock_wrlock(&g_mem_lock);
    for (struct sim_stream *s = g_stream_list; s != NULL; s = s->next)
        pthread_mutex_lock(&s->mu);
    pthread_mutex_lock(&g_ev_mu);
}

static void sim_fork_release(void)
{
    pthread_mutex_unlock(&g_ev_mu);
    for (struct sim_stream *s = g_stream_list; s != NULL; s = s->next)
        pthread_mutex_unlock(&s->mu);
    pthread_rwlock_unlock(&g_mem_lock);
    pthread_mutex_unlock(&g_cfg_mu);
    pthread_rwlock_unlock(&g_lock);
}

static void sim_fork_child(void)
{
    /* Re-initialise rather than unlock: glibc records the writer of an rwlock by
     * thread id, and the forking thread has a new id in the child. */
    pthread_rwlock_init(&g_lock, NULL);
    pthread_mutex_init(&g_cfg_mu, NULL);
    pthread_rwlock_init(&g_mem_lock, NULL);
    pthread_mutex_init(&g_ev_mu, NULL);
    pthread_cond_init(&g_ev_cv, NULL);
    for (struct sim_stream *s = g_stream_list; s != NULL; s = s->next) {
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cv_work, NULL);
        pthread_cond_init(&s->cv_done, NULL);
        struct sim_task *t = s->head;
        while (t != NULL) {
            struct sim_task *next = t->next;
            task_cancel(t);
            if (t->ev != NULL)
                event_unref(t->ev);
            free(t);
            t = next;
        }
        s->head = s->tail = NULL;
        s->completed = s->submitted;
        if (!s->stop && pthread_create(&s->thread, NULL, stream_worker, s) != 0)
            s->stop = true;
    }
}

__attribute__((constructor)) static void sim_register_fork_handlers(void)
{
    pthread_atfork(sim_fork_prepare, sim_fork_release, sim_fork_child);
}

/* Waits for the work submitted so far to every stream of a device (or of all
 * devices when device < 0). */
static void drain_streams(int device)
{
    struct sim_stream *snap[256];
    size_t n;
    bool more;
    do {
        n = 0;
        more = false;
        pthread_rwlock_rdlock(&g_lock);
        for (struct sim_stream *s = g_stream_list; s != NULL; s = s->next) {
            if (device >= 0 && s->device != device)
                continue;
            pthread_mutex_lock(&s->mu);
            bool busy = s->completed < s->submitted;
            pthread_mutex_unlock(&s->mu);
            if (!busy)
                continue;
            if (n == sizeof snap / sizeof snap[0]) {
                more = true;
                break;
            }
            atomic_fetch_add(&s->refs, 1);
            snap[n++] = s;
        }
        pthread_rwlock_unlock(&g_lock);
        for (size_t i = 0; i < n; i++) {
            stream_drain(snap[i], -1);
            stream_unref(snap[i]);
        }
    } while (more);
}

static struct sim_task *task_new(enum task_kind kind)
{
    struct sim_task *t = calloc(1, sizeof *t);
    if (t != NULL)
        t->kind = kind;
    return t;
}

/* ------------------------------------------------------------------------ */
/* init / finalize                                                          */
/* ------------------------------------------------------------------------ */

/* A configuration file must be readable and, unless empty, a JSON object. */
static aclError check_config_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return fail(ACL_ERROR_INVALID_FILE, "aclInit", "cannot open config file %s: %s", path, strerror(errno));
    char *buf = malloc(SIM_CONFIG_MAX);
    if (buf == NULL) {
        fclose(f);
        return fail(ACL_ERROR_BAD_ALLOC, "aclInit", "out of memory");
    }
    size_t n = fread(buf, 1, SIM_CONFIG_MAX, f);
    bool read_error = ferror(f) != 0;
    fclose(f);
    aclError ret = ACL_SUCCESS;
    if (read_error) {
        ret = fail(ACL_ERROR_INVALID_FILE, "aclInit", "cannot read config file %s", path);
    } else if (n == SIM_CONFIG_MAX) {
        ret = fail(ACL_ERROR_INVALID_FILE_SIZE, "aclInit", "config file %s is too large", path);
    } else {
        size_t b = 0, e = n;
        while (b < e && strchr(" \t\r\n", buf[b]) != NULL && buf[b] != '\0')
            b++;
        while (e > b && strchr(" \t\r\n", buf[e - 1]) != NULL && buf[e - 1] != '\0')
            e--;
        if (b < e && (buf[b] != '{' || buf[e - 1] != '}'))
            ret = fail(ACL_ERROR_PARSE_FILE, "aclInit", "config file %s is not a JSON object", path);
    }
    free(buf);
    return ret;
}

aclError aclInit(const char *configPath)
{
    pthread_rwlock_wrlock(&g_lock);
    if (g_initialized) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_REPEAT_INITIALIZE, "aclInit", "aclInit was already called");
    }
    if (configPath != NULL && configPath[0] != '\0') {
        aclError ret = check_config_file(configPath);
        if (ret != ACL_SUCCESS) {
            pthread_rwlock_unlock(&g_lock);
            return ret;
        }
    }
    pthread_mutex_lock(&g_cfg_mu);
    config_load_locked();
    pthread_mutex_unlock(&g_cfg_mu);
    g_initialized = true;
    pthread_rwlock_unlock(&g_lock);
    sim_debug("aclInit: %d devices, soc %s, %.3f GB/s", g_cfg.ndev, g_cfg.soc, g_cfg.gbps);
    return ACL_SUCCESS;
}

aclError aclFinalize(void)
{
    struct sim_stream *streams = NULL;
    struct sim_event *events;

    pthread_rwlock_wrlock(&g_lock);
    if (!g_initialized) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_REPEAT_FINALIZE, "aclFinalize", "aclInit has not been called");
    }
    collect_streams_locked(stream_any, NULL, &streams);
    while (g_ctx_list != NULL) {
        struct sim_ctx *c = g_ctx_list;
        g_ctx_list = c->next;
        c->magic = 0;
        free(c);
    }
    memset(g_dev, 0, sizeof g_dev);
    set_current(NULL);
    events = g_event_list;
    g_event_list = NULL;
    g_initialized = false;
    pthread_rwlock_unlock(&g_lock);

    shutdown_stream_list(streams, false);
    while (events != NULL) {
        struct sim_event *next = events->next;
        event_unref(events);
        events = next;
    }

    pthread_rwlock_wrlock(&g_mem_lock);
    for (size_t i = 0; i < g_mem_n; i++)
        free((void *)g_mem[i].base);
    free(g_mem);
    g_mem = NULL;
    g_mem_n = g_mem_cap = 0;
    memset(g_hbm_used, 0, sizeof g_hbm_used);
    pthread_rwlock_unlock(&g_mem_lock);
    return ACL_SUCCESS;
}

aclError aclrtGetVersion(int32_t *majorVersion, int32_t *minorVersion, int32_t *patchVersion)
{
    if (majorVersion == NULL || minorVersion == NULL || patchVersion == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtGetVersion", "NULL output pointer");
    *majorVersion = ACL_MAJOR_VERSION;
    *minorVersion = ACL_MINOR_VERSION;
    *patchVersion = ACL_PATCH_VERSION;
    return ACL_SUCCESS;
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

aclError aclrtSynchronizeDevice(void)
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

/* ------------------------------------------------------------------------ */
/* streams                                                                  */
/* ------------------------------------------------------------------------ */

aclError aclrtCreateStream(aclrtStream *stream)
{
    if (stream == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtCreateStream", "stream is NULL");
    pthread_rwlock_wrlock(&g_lock);
    struct sim_ctx *c = current_ctx_locked();
    if (c == NULL) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_RT_CONTEXT_NULL, "aclrtCreateStream", "no current context, call aclrtSetDevice first");
    }
    struct sim_stream *s = stream_new_locked(c);
    pthread_rwlock_unlock(&g_lock);
    if (s == NULL)
        return fail(ACL_ERROR_RT_NO_STREAM_RESOURCE, "aclrtCreateStream", "cannot start a stream worker");
    *stream = s;
    return ACL_SUCCESS;
}

static aclError destroy_stream(aclrtStream stream, bool force, const char *api)
{
    if (stream == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "stream is NULL");
    pthread_rwlock_wrlock(&g_lock);
    struct sim_stream *s = find_stream_locked(stream);
    if (s != NULL && s->ctx->default_stream == s)
        s = NULL;
    if (s != NULL)
        unlink_stream_locked(s);
    pthread_rwlock_unlock(&g_lock);
    if (s == NULL)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "%p is not a stream created by aclrtCreateStream", stream);
    stream_shutdown(s, force);
    return ACL_SUCCESS;
}

aclError aclrtDestroyStream(aclrtStream stream)
{
    return destroy_stream(stream, false, "aclrtDestroyStream");
}

aclError aclrtDestroyStreamForce(aclrtStream stream)
{
    return destroy_stream(stream, true, "aclrtDestroyStreamForce");
}

aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout)
{
    struct sim_stream *s;
    if (timeout < -1)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtSynchronizeStreamWithTimeout", "timeout %d < -1", timeout);
    aclError ret = stream_acquire(stream, "aclrtSynchronizeStream", &s);
    if (ret != ACL_SUCCESS)
        return ret;
    bool done = stream_drain(s, timeout);
    stream_unref(s);
    if (!done)
        return fail(ACL_ERROR_RT_STREAM_SYNC_TIMEOUT, "aclrtSynchronizeStreamWithTimeout", "timed out after %d ms",
                    timeout);
    return ACL_SUCCESS;
}

aclError aclrtSynchronizeStream(aclrtStream stream)
{
    struct sim_stream *s;
    aclError ret = stream_acquire(stream, "aclrtSynchronizeStream", &s);
    if (ret != ACL_SUCCESS)
        return ret;
    stream_drain(s, -1);
    stream_unref(s);
    return ACL_SUCCESS;
}

aclError aclrtStreamQuery(aclrtStream stream, aclrtStreamStatus *status)
{
    struct sim_stream *s;
    if (status == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtStreamQuery", "status is NULL");
    aclError ret = stream_acquire(stream, "aclrtStreamQuery", &s);
    if (ret != ACL_SUCCESS)
        return ret;
    pthread_mutex_lock(&s->mu);
    *status = s->completed == s->submitted ? ACL_STREAM_STATUS_COMPLETE : ACL_STREAM_STATUS_NOT_READY;
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
    return ACL_SUCCESS;
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

static aclError current_device(const char *api, int *dev)
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
    struct mem_class dc;
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
    struct mem_class dc;
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

/* ------------------------------------------------------------------------ */
/* events                                                                   */
/* ------------------------------------------------------------------------ */

aclError aclrtCreateEventWithFlag(aclrtEvent *event, uint32_t flag)
{
    if (event == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtCreateEvent", "event is NULL");
    pthread_rwlock_wrlock(&g_lock);
    if (current_ctx_locked() == NULL) {
        pthread_rwlock_unlock(&g_lock);
        return fail(ACL_ERROR_RT_CONTEXT_NULL, "aclrtCreateEvent", "no current context, call aclrtSetDevice first");
    }
    struct sim_event *e = calloc(1, sizeof *e);
    if (e != NULL) {
        e->magic = EVENT_MAGIC;
        atomic_init(&e->refs, 1);
        e->flags = flag;
        e->next = g_event_list;
        g_event_list = e;
    }
    pthread_rwlock_unlock(&g_lock);
    if (e == NULL)
        return fail(ACL_ERROR_RT_NO_EVENT_RESOURCE, "aclrtCreateEvent", "out of memory");
    *event = e;
    return ACL_SUCCESS;
}

aclError aclrtCreateEvent(aclrtEvent *event)
{
    return aclrtCreateEventWithFlag(event, ACL_EVENT_SYNC | ACL_EVENT_TIME_LINE);
}

aclError aclrtDestroyEvent(aclrtEvent event)
{
    if (event == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtDestroyEvent", "event is NULL");
    struct sim_event *found = NULL;
    pthread_rwlock_wrlock(&g_lock);
    for (struct sim_event **pp = &g_event_list; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == event) {
            found = *pp;
            *pp = found->next;
            break;
        }
    }
    pthread_rwlock_unlock(&g_lock);
    if (found == NULL)
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtDestroyEvent", "%p is not a live event", event);
    /* Records still queued hold their own references. */
    event_unref(found);
    return ACL_SUCCESS;
}

aclError aclrtRecordEvent(aclrtEvent event, aclrtStream stream)
{
    static const char api[] = "aclrtRecordEvent";
    if (event == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "event is NULL");
    struct sim_stream *s;
    aclError ret = stream_acquire(stream, api, &s);
    if (ret != ACL_SUCCESS)
        return ret;
    struct sim_event *e = event_acquire(event);
    if (e == NULL) {
        stream_unref(s);
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "%p is not a live event", event);
    }
    struct sim_task *t = task_new(TASK_RECORD);
    if (t == NULL) {
        event_unref(e);
        stream_unref(s);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "out of memory");
    }
    /* done_seq only moves forward: the event reports its latest record. */
    pthread_mutex_lock(&g_ev_mu);
    t->ev = e;
    t->seq = ++e->record_seq;
    pthread_mutex_unlock(&g_ev_mu);
    uint64_t qseq = stream_submit(s, t);
    stream_unref(s);
    if (qseq == 0)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "stream %p is being destroyed", stream);
    return ACL_SUCCESS;
}

aclError aclrtResetEvent(aclrtEvent event, aclrtStream stream)
{
    static const char api[] = "aclrtResetEvent";
    if (event == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "event is NULL");
    struct sim_stream *s;
    aclError ret = stream_acquire(stream, api, &s);
    if (ret != ACL_SUCCESS)
        return ret;
    stream_unref(s);
    struct sim_event *e = event_acquire(event);
    if (e == NULL)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "%p is not a live event", event);
    pthread_mutex_lock(&g_ev_mu);
    if (e->done_seq >= e->record_seq) {
        e->record_seq = e->done_seq = 0;
        e->has_ts = false;
    }
    pthread_mutex_unlock(&g_ev_mu);
    event_unref(e);
    return ACL_SUCCESS;
}

aclError aclrtStreamWaitEvent(aclrtStream stream, aclrtEvent event)
{
    static const char api[] = "aclrtStreamWaitEvent";
    if (event == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "event is NULL");
    struct sim_stream *s;
    aclError ret = stream_acquire(stream, api, &s);
    if (ret != ACL_SUCCESS)
        return ret;
    struct sim_event *e = event_acquire(event);
    if (e == NULL) {
        stream_unref(s);
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "%p is not a live event", event);
    }
    pthread_mutex_lock(&g_ev_mu);
    uint64_t target = e->record_seq;
    pthread_mutex_unlock(&g_ev_mu);
    if (target == 0) {
        /* Waiting for an event that was never recorded does not block. */
        event_unref(e);
        stream_unref(s);
        return ACL_SUCCESS;
    }
    struct sim_task *t = task_new(TASK_WAIT);
    if (t == NULL) {
        event_unref(e);
        stream_unref(s);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, api, "out of memory");
    }
    t->ev = e;
    t->seq = target;
    uint64_t qseq = stream_submit(s, t);
    stream_unref(s);
    if (qseq == 0)
        return fail(ACL_ERROR_RT_PARAM_INVALID, api, "stream %p is being destroyed", stream);
    return ACL_SUCCESS;
}

aclError aclrtSynchronizeEvent(aclrtEvent event)
{
    if (event == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtSynchronizeEvent", "event is NULL");
    struct sim_event *e = event_acquire(event);
    if (e == NULL)
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtSynchronizeEvent", "%p is not a live event", event);
    pthread_mutex_lock(&g_ev_mu);
    uint64_t target = e->record_seq;
    while (e->done_seq < target)
        pthread_cond_wait(&g_ev_cv, &g_ev_mu);
    pthread_mutex_unlock(&g_ev_mu);
    event_unref(e);
    return ACL_SUCCESS;
}

aclError aclrtQueryEventStatus(aclrtEvent event, aclrtEventRecordedStatus *status)
{
    if (event == NULL || status == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtQueryEventStatus", "event or status is NULL");
    struct sim_event *e = event_acquire(event);
    if (e == NULL)
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtQueryEventStatus", "%p is not a live event", event);
    pthread_mutex_lock(&g_ev_mu);
    *status = event_complete_locked(e) ? ACL_EVENT_RECORDED_STATUS_COMPLETE : ACL_EVENT_RECORDED_STATUS_NOT_READY;
    pthread_mutex_unlock(&g_ev_mu);
    event_unref(e);
    return ACL_SUCCESS;
}

aclError aclrtQueryEvent(aclrtEvent event, aclrtEventStatus *status)
{
    if (event == NULL || status == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtQueryEvent", "event or status is NULL");
    struct sim_event *e = event_acquire(event);
    if (e == NULL)
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtQueryEvent", "%p is not a live event", event);
    pthread_mutex_lock(&g_ev_mu);
    *status = e->done_seq >= e->record_seq ? ACL_EVENT_STATUS_COMPLETE : ACL_EVENT_STATUS_NOT_READY;
    pthread_mutex_unlock(&g_ev_mu);
    event_unref(e);
    return ACL_SUCCESS;
}

aclError aclrtEventElapsedTime(float *ms, aclrtEvent startEvent, aclrtEvent endEvent)
{
    static const char api[] = "aclrtEventElapsedTime";
    if (ms == NULL || startEvent == NULL || endEvent == NULL)
        return fail(ACL_ERROR_INVALID_PARAM, api, "NULL argument");
    struct sim_event *a = event_acquire(startEvent);
    struct sim_event *b = event_acquire(endEvent);
    aclError ret = ACL_SUCCESS;
    if (a == NULL || b == NULL) {
        ret = fail(ACL_ERROR_RT_PARAM_INVALID, api, "not a live event");
    } else {
        pthread_mutex_lock(&g_ev_mu);
        bool ready = event_complete_locked(a) && event_complete_locked(b) && a->has_ts && b->has_ts;
        uint64_t t0 = a->ts_ns, t1 = b->ts_ns;
        pthread_mutex_unlock(&g_ev_mu);
        if (!ready)
            ret = fail(ACL_ERROR_RT_EVENT_NOT_COMPLETE, api, "both events must be recorded and complete");
        else
            *ms = (float)((double)((int64_t)(t1 - t0)) / 1e6);
    }
    if (a != NULL)
        event_unref(a);
    if (b != NULL)
        event_unref(b);
    return ret;
}
