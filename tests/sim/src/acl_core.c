/*
 * acl_core.c - configuration, error reporting, time and aclInit/aclFinalize of the
 * simulated AscendCL runtime.
 */
#include "sim_internal.h"

/* ------------------------------------------------------------------------ */
/* configuration                                                            */
/* ------------------------------------------------------------------------ */

/* The device clock's default drift (see device_clock_ns). */
#define SIM_CLOCK_DRIFT_PPM 40

struct sim_config g_cfg = { .drift_ppm = SIM_CLOCK_DRIFT_PPM };
static bool g_cfg_loaded;
pthread_mutex_t g_cfg_mu = PTHREAD_MUTEX_INITIALIZER;

void config_load_locked(void)
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

    v = getenv("NPUSIM_STRICT_KIND");
    c.strict_kind = v != NULL && strcmp(v, "1") == 0;
    if (v != NULL && *v != '\0' && strcmp(v, "1") != 0 && strcmp(v, "0") != 0)
        sim_debug("NPUSIM_STRICT_KIND=%s is not 0 or 1, kinds are corrected", v);

    c.drift_ppm = SIM_CLOCK_DRIFT_PPM;
    v = getenv("NPUSIM_CLOCK_DRIFT_PPM");
    if (v != NULL && *v != '\0') {
        char *end;
        unsigned long long ppm = strtoull(v, &end, 10);
        if (*end == '\0' && v[0] != '-' && ppm <= 1000000)
            c.drift_ppm = ppm;
        else
            sim_debug("NPUSIM_CLOCK_DRIFT_PPM=%s is not in 0..1000000, using %d", v, SIM_CLOCK_DRIFT_PPM);
    }

    g_cfg = c;
    g_cfg_loaded = true;
}

/* Loads the configuration if aclInit has not done so yet. */
void config_ensure(void)
{
    pthread_mutex_lock(&g_cfg_mu);
    if (!g_cfg_loaded)
        config_load_locked();
    pthread_mutex_unlock(&g_cfg_mu);
}

/* 910B and 910_93 (910C) cannot run asynchronous host-to-host copies. */
bool soc_rejects_async_h2h(void)
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
aclError fail(aclError code, const char *api, const char *fmt, ...)
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

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The device clock.  Like a real NPU's system counter it is not the host's:
 * it started SIM_CLOCK_OFFSET_NS before the host's CLOCK_MONOTONIC origin and
 * runs NPUSIM_CLOCK_DRIFT_PPM (default 40) parts per million fast, so a tool
 * that maps event timestamps onto host time has to calibrate (offset and rate).
 */
#define SIM_CLOCK_OFFSET_NS 86523456789012ull /* about one day */

uint64_t device_clock_ns(uint64_t host_ns)
{
    uint64_t ppm = g_cfg.drift_ppm;
    return SIM_CLOCK_OFFSET_NS + host_ns + host_ns / 1000000u * ppm + host_ns % 1000000u * ppm / 1000000u;
}

void sleep_until_ns(uint64_t deadline)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline / 1000000000ull);
    ts.tv_nsec = (long)(deadline % 1000000000ull);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Makes a transfer of n bytes that started at start_ns last as long as the
 * bandwidth model says. */
/* How long a transfer of n bytes lasts in the bandwidth model (0: instant). */
uint64_t transfer_ns(size_t n, double gbps)
{
    if (gbps <= 0.0 || n == 0)
        return 0;
    return (uint64_t)((double)n / gbps);
}

void model_transfer_time(uint64_t start_ns, size_t n, double gbps)
{
    uint64_t dur = transfer_ns(n, gbps);
    if (dur > 0)
        sleep_until_ns(start_ns + dur);
}

/* objects                                                                  */
/* ------------------------------------------------------------------------ */

/* g_lock protects: g_initialized, g_dev, the context, stream and event lists. */
pthread_rwlock_t g_lock = PTHREAD_RWLOCK_INITIALIZER;
bool g_initialized;
struct sim_device g_dev[SIM_MAX_DEVICES];
struct sim_ctx *g_ctx_list;
struct sim_stream *g_stream_list;
struct sim_event *g_event_list;
uint64_t g_next_gen = 1;

/* g_ev_mu protects the mutable fields of every event. */
pthread_mutex_t g_ev_mu = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_ev_cv = PTHREAD_COND_INITIALIZER;

__thread struct sim_ctx *tls_ctx;
__thread uint64_t tls_ctx_gen;
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

    mem_release_all();
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

