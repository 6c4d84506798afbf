/*
 * acl_event.c - events of the simulated AscendCL runtime.
 */
#include "sim_internal.h"

/* ------------------------------------------------------------------------ */
/* events                                                                   */
/* ------------------------------------------------------------------------ */

void event_unref(struct sim_event *e)
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

/*
 * The prologue the event functions share, in the runtime's order of checks:
 * the event handle (and the output pointer, for functions with one) must not
 * be NULL (ACL_ERROR_INVALID_PARAM); a function that takes a stream resolves
 * it next (stream_acquire's codes; *s holds a reference); then the event must
 * be live (ACL_ERROR_RT_PARAM_INVALID; *e holds a reference).  On failure
 * nothing is held.
 */
struct event_args {
    const char *api;
    aclrtEvent event;
    const void *out;  /* the function's output pointer, or NULL */
    bool has_out;     /* the function has an output pointer to check */
    bool has_stream;  /* the function takes a stream */
    aclrtStream stream;
};

static aclError event_prologue(const struct event_args *a, struct sim_event **e, struct sim_stream **s)
{
    if (a->event == NULL || (a->has_out && a->out == NULL))
        return fail(ACL_ERROR_INVALID_PARAM, a->api, a->has_out ? "event or output is NULL" : "event is NULL");
    if (a->has_stream) {
        aclError ret = stream_acquire(a->stream, a->api, s);
        if (ret != ACL_SUCCESS)
            return ret;
    }
    *e = event_acquire(a->event);
    if (*e == NULL) {
        if (a->has_stream)
            stream_unref(*s);
        return fail(ACL_ERROR_RT_PARAM_INVALID, a->api, "%p is not a live event", a->event);
    }
    return ACL_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* event API                                                                */
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
    const struct event_args a = { .api = "aclrtRecordEvent", .event = event, .has_stream = true, .stream = stream };
    struct sim_event *e;
    struct sim_stream *s;
    aclError ret = event_prologue(&a, &e, &s);
    if (ret != ACL_SUCCESS)
        return ret;
    struct sim_task *t = task_new(TASK_RECORD);
    if (t == NULL) {
        event_unref(e);
        stream_unref(s);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, a.api, "out of memory");
    }
    /* done_seq only moves forward: the event reports its latest record. */
    pthread_mutex_lock(&g_ev_mu);
    t->ev = e;
    t->seq = ++e->record_seq;
    pthread_mutex_unlock(&g_ev_mu);
    uint64_t qseq = stream_submit(s, t);
    stream_unref(s);
    if (qseq == 0)
        return fail(ACL_ERROR_RT_PARAM_INVALID, a.api, "stream %p is being destroyed", stream);
    return ACL_SUCCESS;
}

aclError aclrtResetEvent(aclrtEvent event, aclrtStream stream)
{
    const struct event_args a = { .api = "aclrtResetEvent", .event = event, .has_stream = true, .stream = stream };
    struct sim_event *e;
    struct sim_stream *s;
    aclError ret = event_prologue(&a, &e, &s);
    if (ret != ACL_SUCCESS)
        return ret;
    stream_unref(s);
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
    const struct event_args a = { .api = "aclrtStreamWaitEvent", .event = event, .has_stream = true, .stream = stream };
    struct sim_event *e;
    struct sim_stream *s;
    aclError ret = event_prologue(&a, &e, &s);
    if (ret != ACL_SUCCESS)
        return ret;
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
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, a.api, "out of memory");
    }
    t->ev = e;
    t->seq = target;
    uint64_t qseq = stream_submit(s, t);
    stream_unref(s);
    if (qseq == 0)
        return fail(ACL_ERROR_RT_PARAM_INVALID, a.api, "stream %p is being destroyed", stream);
    return ACL_SUCCESS;
}

static aclError synchronize_event(aclrtEvent event)
{
    const struct event_args a = { .api = "aclrtSynchronizeEvent", .event = event };
    struct sim_event *e;
    aclError ret = event_prologue(&a, &e, NULL);
    if (ret != ACL_SUCCESS)
        return ret;
    pthread_mutex_lock(&g_ev_mu);
    uint64_t target = e->record_seq;
    while (e->done_seq < target)
        pthread_cond_wait(&g_ev_cv, &g_ev_mu);
    pthread_mutex_unlock(&g_ev_mu);
    event_unref(e);
    return ACL_SUCCESS;
}

aclError aclrtSynchronizeEvent(aclrtEvent event)
{
    aclError ret = synchronize_event(event);
    if (sim_log_wants(SIM_FN_aclrtSynchronizeEvent))
        sim_log_line("aclrtSynchronizeEvent event=%p ret=%d\n", event, ret);
    return ret;
}

aclError aclrtQueryEventStatus(aclrtEvent event, aclrtEventRecordedStatus *status)
{
    const struct event_args a = { .api = "aclrtQueryEventStatus", .event = event, .out = status, .has_out = true };
    struct sim_event *e;
    aclError ret = event_prologue(&a, &e, NULL);
    if (ret != ACL_SUCCESS)
        return ret;
    pthread_mutex_lock(&g_ev_mu);
    *status = event_complete_locked(e) ? ACL_EVENT_RECORDED_STATUS_COMPLETE : ACL_EVENT_RECORDED_STATUS_NOT_READY;
    pthread_mutex_unlock(&g_ev_mu);
    event_unref(e);
    return ACL_SUCCESS;
}

aclError aclrtQueryEvent(aclrtEvent event, aclrtEventStatus *status)
{
    const struct event_args a = { .api = "aclrtQueryEvent", .event = event, .out = status, .has_out = true };
    struct sim_event *e;
    aclError ret = event_prologue(&a, &e, NULL);
    if (ret != ACL_SUCCESS)
        return ret;
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
        uint64_t t0 = device_clock_ns(a->ts_ns), t1 = device_clock_ns(b->ts_ns);
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

/* The device-clock time (microseconds, SPEC section 7) at which the stream
 * reached the event's latest record.  Needs an event created with
 * ACL_EVENT_TIME_LINE whose record has completed. */
aclError aclrtEventGetTimestamp(aclrtEvent event, uint64_t *timestamp)
{
    const struct event_args a = { .api = "aclrtEventGetTimestamp", .event = event, .out = timestamp, .has_out = true };
    struct sim_event *e;
    aclError ret = event_prologue(&a, &e, NULL);
    if (ret != ACL_SUCCESS)
        return ret;
    pthread_mutex_lock(&g_ev_mu);
    bool timeline = (e->flags & ACL_EVENT_TIME_LINE) != 0;
    bool ready = event_complete_locked(e) && e->has_ts;
    uint64_t ts = e->ts_ns;
    pthread_mutex_unlock(&g_ev_mu);
    event_unref(e);
    if (!timeline)
        return fail(ACL_ERROR_RT_EVENT_TIMESTAMP_INVALID, a.api, "event %p was created without ACL_EVENT_TIME_LINE",
                    event);
    if (!ready)
        return fail(ACL_ERROR_RT_EVENT_NOT_COMPLETE, a.api, "event %p is not recorded and complete", event);
    *timestamp = device_clock_ns(ts) / 1000u;
    return ACL_SUCCESS;
}
