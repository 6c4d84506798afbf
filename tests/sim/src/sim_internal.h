/*
 * sim_internal.h - state and helpers shared by the files of the simulated
 * AscendCL runtime (libascendcl.so).  Not installed; nothing here is exported
 * (the library is built with -fvisibility=hidden).
 *
 *   acl_core.c    configuration, error reporting, time, aclInit/aclFinalize
 *   acl_device.c  devices and contexts
 *   acl_stream.c  streams, the stream worker, fork handling, host waits
 *   acl_memory.c  the memory table, allocations, registrations, pointer attributes
 *   acl_copy.c    copies and memsets, the location/kind table
 *   acl_event.c   events and the device clock
 *
 * Internal calls never go through the exported entry points, so an
 * interposer sees exactly the program's own calls.
 *
 * Lock order: g_lock -> g_mem_lock; g_lock -> stream->mu.  g_ev_mu is a leaf.
 */
#ifndef NPUSIM_SIM_INTERNAL_H
#define NPUSIM_SIM_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
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

/* ---- configuration (acl_core.c) ----------------------------------------- */

struct sim_config {
    int ndev;
    char soc[64];
    double gbps;      /* bytes per nanosecond == GB/s; 0 = copies are instant */
    size_t hbm_total; /* bytes of HBM per device */
    bool strict_kind; /* NPUSIM_STRICT_KIND=1: rows 1-4 of the kind table reject mismatches */
    uint64_t drift_ppm; /* NPUSIM_CLOCK_DRIFT_PPM: how fast the device clock runs (default 40) */
};

extern struct sim_config g_cfg;
extern pthread_mutex_t g_cfg_mu;

void config_load_locked(void);
void config_ensure(void);
bool soc_rejects_async_h2h(void);

/* ---- errors and time (acl_core.c) --------------------------------------- */

__attribute__((format(printf, 3, 4)))
aclError fail(aclError code, const char *api, const char *fmt, ...);

uint64_t now_ns(void);
uint64_t device_clock_ns(uint64_t host_ns);
void sleep_until_ns(uint64_t deadline);
void model_transfer_time(uint64_t start_ns, size_t n, double gbps);
uint64_t transfer_ns(size_t n, double gbps);

/* ---- objects ------------------------------------------------------------ */

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

enum task_kind { TASK_COPY, TASK_COPY2D, TASK_MEMSET, TASK_RECORD, TASK_WAIT };

struct sim_task {
    enum task_kind kind;
    struct sim_task *next;
    void *dst;
    const void *src;
    size_t n;                             /* bytes moved (the model's duration) */
    size_t dpitch, spitch, width, height; /* TASK_COPY2D */
    int value;
    struct sim_event *ev; /* holds a reference */
    uint64_t seq;
    uint64_t submit_ns; /* host time of the submission: the earliest the device can start it */
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
    uint64_t device_ns; /* worker only: when the device finishes the stream's work so far
                         * (host CLOCK_MONOTONIC ns; the modelled device timeline) */
    atomic_bool discard;
    struct sim_stream *next; /* registry */
};

struct sim_device {
    int refcnt;
    struct sim_ctx *default_ctx;
};

/* g_lock protects: g_initialized, g_dev, the context, stream and event lists. */
extern pthread_rwlock_t g_lock;
extern bool g_initialized;
extern struct sim_device g_dev[SIM_MAX_DEVICES];
extern struct sim_ctx *g_ctx_list;
extern struct sim_stream *g_stream_list;
extern struct sim_event *g_event_list;
extern uint64_t g_next_gen;

/* g_ev_mu protects the mutable fields of every event. */
extern pthread_mutex_t g_ev_mu;
extern pthread_cond_t g_ev_cv;

extern __thread struct sim_ctx *tls_ctx;
extern __thread uint64_t tls_ctx_gen;

/* ---- memory table (acl_memory.c) ---------------------------------------- */

/* MEM_REGISTERED: a host range of the program's own memory registered with
 * aclrtHostRegister(V2); the runtime treats it as pinned until unregistered. */
enum mem_kind { MEM_PAGEABLE = 0, MEM_DEVICE = 1, MEM_PINNED = 2, MEM_REGISTERED = 3 };

struct mem_range {
    uintptr_t base;
    size_t size;
    size_t charged;
    int kind;
    int device;
    uint32_t page_size; /* what aclrtPointerGetAttributes reports */
};

struct mem_class {
    int kind;
    int device;
    bool in_bounds; /* [p, p+n) lies inside the tracked allocation */
    uint32_t page_size;
};

extern pthread_rwlock_t g_mem_lock;

void mem_release_all(void);

struct mem_class mem_classify(const void *p, size_t n);
const char *mem_kind_name(int kind);

/* ---- contexts (acl_device.c) -------------------------------------------- */

struct sim_ctx *current_ctx_locked(void);
void set_current(struct sim_ctx *c);
void ctx_destroy_locked(struct sim_ctx *c, struct sim_stream **streams);
aclError current_device(const char *api, int *dev);

/* ---- streams (acl_stream.c) --------------------------------------------- */

void stream_unref(struct sim_stream *s);
aclError stream_acquire(aclrtStream handle, const char *api, struct sim_stream **out);
struct sim_task *task_new(enum task_kind kind);
uint64_t stream_submit(struct sim_stream *s, struct sim_task *t);
bool stream_wait_seq(struct sim_stream *s, uint64_t seq, int32_t timeout_ms);
bool stream_drain(struct sim_stream *s, int32_t timeout_ms);
void drain_streams(int device);
bool stream_any(const struct sim_stream *s, const void *unused);
void collect_streams_locked(bool (*pred)(const struct sim_stream *, const void *), const void *arg,
                            struct sim_stream **out);
void shutdown_stream_list(struct sim_stream *list, bool force);

/* ---- events (acl_event.c) ----------------------------------------------- */

void event_unref(struct sim_event *e);

#endif /* NPUSIM_SIM_INTERNAL_H */
