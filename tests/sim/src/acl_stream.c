/*
 * acl_stream.c - streams of the simulated AscendCL runtime: each stream is a FIFO
 * worker thread executing copies, memsets, event records and event waits;
 * fork handling; host waits on streams and devices.
 */
#include "sim_internal.h"

/* ------------------------------------------------------------------------ */
/* streams                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * The device timeline of a stream is modelled, not measured: a task starts on
 * the device when it has been submitted and the stream's earlier work is done
 * (device_ns), a copy or memset then lasts exactly its modelled time, and an
 * event record takes the time the stream reaches it.  The worker thread does
 * the work whenever it gets to run and then sleeps until the host clock has
 * reached the modelled end, so host waits return after the device time they
 * wait for, and a worker scheduled late (a loaded machine) delays what the
 * host observes, never the device timestamps.
 */
static uint64_t device_start(struct sim_stream *s, const struct sim_task *t)
{
    return s->device_ns > t->submit_ns ? s->device_ns : t->submit_ns;
}

static void task_run(struct sim_stream *s, struct sim_task *t)
{
    switch (t->kind) {
    case TASK_COPY:
    case TASK_COPY2D:
    case TASK_MEMSET: {
        uint64_t start = device_start(s, t);
        if (t->kind == TASK_COPY)
            memmove(t->dst, t->src, t->n);
        else if (t->kind == TASK_MEMSET)
            memset(t->dst, t->value, t->n);
        else
            for (size_t r = 0; r < t->height; r++)
                memmove((char *)t->dst + r * t->dpitch, (const char *)t->src + r * t->spitch, t->width);
        s->device_ns = start + transfer_ns(t->n, s->gbps);
        sleep_until_ns(s->device_ns);
        break;
    }
    case TASK_RECORD:
        s->device_ns = device_start(s, t);
        pthread_mutex_lock(&g_ev_mu);
        t->ev->ts_ns = s->device_ns;
        t->ev->has_ts = true;
        if (t->seq > t->ev->done_seq)
            t->ev->done_seq = t->seq;
        pthread_cond_broadcast(&g_ev_cv);
        pthread_mutex_unlock(&g_ev_mu);
        break;
    case TASK_WAIT: {
        uint64_t start = device_start(s, t);
        pthread_mutex_lock(&g_ev_mu);
        while (t->ev->done_seq < t->seq && !atomic_load(&s->discard))
            pthread_cond_wait(&g_ev_cv, &g_ev_mu);
        /* The stream goes on once the awaited record has happened on its own
         * stream (the event's latest timestamp). */
        uint64_t reached = t->ev->has_ts ? t->ev->ts_ns : 0;
        pthread_mutex_unlock(&g_ev_mu);
        s->device_ns = reached > start ? reached : start;
        break;
    }
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

void stream_unref(struct sim_stream *s)
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
void collect_streams_locked(bool (*pred)(const struct sim_stream *, const void *), const void *arg,
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

bool stream_any(const struct sim_stream *s, const void *unused)
{
    (void)s;
    (void)unused;
    return true;
}

void shutdown_stream_list(struct sim_stream *list, bool force)
{
    while (list != NULL) {
        struct sim_stream *next = list->next;
        stream_shutdown(list, force);
        list = next;
    }
}

/* Unregisters and frees a context; its streams are moved to *streams for the
 * caller to shut down after dropping g_lock. */
void ctx_destroy_locked(struct sim_ctx *c, struct sim_stream **streams)
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
aclError stream_acquire(aclrtStream handle, const char *api, struct sim_stream **out)
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
uint64_t stream_submit(struct sim_stream *s, struct sim_task *t)
{
    uint64_t seq = 0;
    t->next = NULL;
    t->submit_ns = now_ns();
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
bool stream_wait_seq(struct sim_stream *s, uint64_t seq, int32_t timeout_ms)
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

bool stream_drain(struct sim_stream *s, int32_t timeout_ms)
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
void drain_streams(int device)
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

struct sim_task *task_new(enum task_kind kind)
{
    struct sim_task *t = calloc(1, sizeof *t);
    if (t != NULL)
        t->kind = kind;
    return t;
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

static aclError synchronize_stream(aclrtStream stream, int32_t timeout, const char *api)
{
    struct sim_stream *s;
    if (timeout < -1)
        return fail(ACL_ERROR_INVALID_PARAM, api, "timeout %d < -1", timeout);
    aclError ret = stream_acquire(stream, api, &s);
    if (ret != ACL_SUCCESS)
        return ret;
    bool done = stream_drain(s, timeout);
    stream_unref(s);
    if (!done)
        return fail(ACL_ERROR_RT_STREAM_SYNC_TIMEOUT, api, "timed out after %d ms", timeout);
    return ACL_SUCCESS;
}

/* timeout in milliseconds; -1 waits for ever. */
aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout)
{
    aclError ret = synchronize_stream(stream, timeout, "aclrtSynchronizeStreamWithTimeout");
    if (sim_log_wants(SIM_FN_aclrtSynchronizeStreamWithTimeout))
        sim_log_line("aclrtSynchronizeStreamWithTimeout stream=%p timeout=%d ret=%d\n", stream, (int)timeout, ret);
    return ret;
}

aclError aclrtSynchronizeStream(aclrtStream stream)
{
    aclError ret = synchronize_stream(stream, -1, "aclrtSynchronizeStream");
    if (sim_log_wants(SIM_FN_aclrtSynchronizeStream))
        sim_log_line("aclrtSynchronizeStream stream=%p ret=%d\n", stream, ret);
    return ret;
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

