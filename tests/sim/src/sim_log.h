/*
 * sim_log.h - call log and debug output shared by the simulated libraries.
 *
 * NPUSIM_LOG=<file>: every call of a logged function appends one line to
 * <file>, written when the call returns.  NPUSIM_LOG_FUNCS chooses the
 * functions: a comma-separated list of names, or "all" (every function of the
 * copy path an interposer hooks, SIM_LOG_FUNCS below); by default the two
 * seed functions aclrtMemcpyAsync and HcclMemcpyAsync.  Each line is formatted into a stack buffer and
 * written with a single write() on an O_APPEND descriptor, so lines from
 * concurrent threads (and processes) never interleave.
 *
 * NPUSIM_DEBUG=1: diagnostics on stderr, prefixed "npusim: ".
 *
 * Each library that includes this header gets its own copy of the state
 * (everything is static); the file is opened on first use.
 */
#ifndef NPUSIM_SIM_LOG_H
#define NPUSIM_SIM_LOG_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIM_LOG_LINE_MAX 512

/* The functions that can be logged, in SPEC section 2 order. */
#define SIM_LOG_FUNCS(X)                                                                                     \
    X(aclrtMemcpyAsync)                                                                                      \
    X(HcclMemcpyAsync)                                                                                       \
    X(aclrtMemcpy)                                                                                           \
    X(aclrtMemcpyAsyncWithCondition)                                                                         \
    X(aclrtMemcpy2d)                                                                                         \
    X(aclrtMemcpy2dAsync)                                                                                    \
    X(aclrtMemsetAsync)                                                                                      \
    X(aclrtMalloc)                                                                                           \
    X(aclrtMallocAlign32)                                                                                    \
    X(aclrtMallocCached)                                                                                     \
    X(aclrtMallocWithCfg)                                                                                    \
    X(aclrtFree)                                                                                             \
    X(aclrtMallocHost)                                                                                       \
    X(aclrtMallocHostWithCfg)                                                                                \
    X(aclrtFreeHost)                                                                                         \
    X(aclrtHostRegister)                                                                                     \
    X(aclrtHostRegisterV2)                                                                                   \
    X(aclrtHostUnregister)                                                                                   \
    X(aclrtSynchronizeStream)                                                                                \
    X(aclrtSynchronizeStreamWithTimeout)                                                                     \
    X(aclrtSynchronizeEvent)                                                                                 \
    X(aclrtSynchronizeDevice)                                                                                \
    X(HcclD2DMemcpyAsync)

enum sim_log_fn {
#define SIM_LOG_ENUM(name) SIM_FN_##name,
    SIM_LOG_FUNCS(SIM_LOG_ENUM)
#undef SIM_LOG_ENUM
    SIM_FN_COUNT
};

static pthread_once_t sim_log_once = PTHREAD_ONCE_INIT;
static int sim_log_fd = -1;
static int sim_debug_on = 0;
static unsigned long long sim_log_mask = (1ull << SIM_FN_aclrtMemcpyAsync) | (1ull << SIM_FN_HcclMemcpyAsync);

/* NPUSIM_LOG_FUNCS: "all" or a comma-separated list of names; unknown names
 * are ignored (NPUSIM_DEBUG=1 says so). */
static void sim_log_parse_funcs(const char *v)
{
    static const char *const names[] = {
#define SIM_LOG_NAME(name) #name,
        SIM_LOG_FUNCS(SIM_LOG_NAME)
#undef SIM_LOG_NAME
    };
    if (strcmp(v, "all") == 0) {
        sim_log_mask = (1ull << SIM_FN_COUNT) - 1;
        return;
    }
    sim_log_mask = 0;
    for (const char *p = v; *p != '\0';) {
        size_t n = strcspn(p, ",");
        int found = 0;
        for (int i = 0; i < SIM_FN_COUNT; i++) {
            if (strlen(names[i]) == n && strncmp(names[i], p, n) == 0) {
                sim_log_mask |= 1ull << i;
                found = 1;
            }
        }
        if (!found && n > 0 && sim_debug_on)
            fprintf(stderr, "npusim: NPUSIM_LOG_FUNCS: unknown function %.*s\n", (int)n, p);
        p += n;
        if (*p == ',')
            p++;
    }
}

static void sim_log_open(void)
{
    const char *dbg = getenv("NPUSIM_DEBUG");
    sim_debug_on = dbg != NULL && dbg[0] != '\0' && strcmp(dbg, "0") != 0;

    const char *funcs = getenv("NPUSIM_LOG_FUNCS");
    if (funcs != NULL && funcs[0] != '\0')
        sim_log_parse_funcs(funcs);

    const char *path = getenv("NPUSIM_LOG");
    if (path == NULL || path[0] == '\0')
        return;
    sim_log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (sim_log_fd < 0 && sim_debug_on)
        fprintf(stderr, "npusim: cannot open NPUSIM_LOG file %s: %s\n", path, strerror(errno));
}

static inline int sim_log_enabled(void)
{
    pthread_once(&sim_log_once, sim_log_open);
    return sim_log_fd >= 0;
}

/* Whether calls of function fn are logged. */
static inline int sim_log_wants(enum sim_log_fn fn)
{
    return sim_log_enabled() && (sim_log_mask >> fn & 1u) != 0;
}

static inline int sim_debug_enabled(void)
{
    pthread_once(&sim_log_once, sim_log_open);
    return sim_debug_on;
}

__attribute__((format(printf, 1, 2), unused))
static void sim_log_line(const char *fmt, ...)
{
    if (!sim_log_enabled())
        return;
    char buf[SIM_LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    size_t len = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
    ssize_t w;
    do {
        w = write(sim_log_fd, buf, len);
    } while (w < 0 && errno == EINTR);
}

__attribute__((format(printf, 1, 2), unused))
static void sim_debug(const char *fmt, ...)
{
    if (!sim_debug_enabled())
        return;
    char buf[SIM_LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    fprintf(stderr, "npusim: %s\n", buf);
}

#endif /* NPUSIM_SIM_LOG_H */
