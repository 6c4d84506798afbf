/*
 * sim_log.h - call log and debug output shared by the simulated libraries.
 *
 * NPUSIM_LOG=<file>: every entry to aclrtMemcpyAsync / HcclMemcpyAsync
 * appends one line to <file>.  Each line is formatted into a stack buffer and
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

static pthread_once_t sim_log_once = PTHREAD_ONCE_INIT;
static int sim_log_fd = -1;
static int sim_debug_on = 0;

static void sim_log_open(void)
{
    const char *dbg = getenv("NPUSIM_DEBUG");
    sim_debug_on = dbg != NULL && dbg[0] != '\0' && strcmp(dbg, "0") != 0;

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
