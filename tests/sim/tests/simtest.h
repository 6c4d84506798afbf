/*
 * simtest.h - minimal TAP-style test helpers for the simulated runtime's tests.
 *
 * Every check prints "ok N - name" or "not ok N - name" (with the failing
 * expression and values); st_done() prints the plan "1..N" and returns the
 * process exit status (0 only if every check passed).  Usable from C and C++.
 */
#ifndef NPUSIM_SIMTEST_H
#define NPUSIM_SIMTEST_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int st_count;
static int st_failures;

__attribute__((format(printf, 3, 4), unused))
static int st_report(int pass, const char *detail, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    st_count++;
    if (pass) {
        printf("ok %d - %s\n", st_count, name);
    } else {
        st_failures++;
        printf("not ok %d - %s\n#   %s\n", st_count, name, detail);
    }
    fflush(stdout);
    return pass;
}

/* CHECK(cond, "name fmt", args...) */
#define CHECK(cond, ...) st_report(!!(cond), "failed: " #cond, __VA_ARGS__)

/* CHECK_EQ(got, want, "name fmt", args...) for integer values */
#define CHECK_EQ(got, want, ...)                                                                     \
    do {                                                                                             \
        long long st_got_ = (long long)(got), st_want_ = (long long)(want);                          \
        char st_detail_[256];                                                                        \
        snprintf(st_detail_, sizeof st_detail_, "%s == %lld, expected %s == %lld", #got, st_got_,   \
                 #want, st_want_);                                                                   \
        st_report(st_got_ == st_want_, st_detail_, __VA_ARGS__);                                     \
    } while (0)

/* REQUIRE: like CHECK_EQ for setup steps; stops the test when it fails. */
#define REQUIRE_OK(expr)                                                                             \
    do {                                                                                             \
        long long st_r_ = (long long)(expr);                                                         \
        if (st_r_ != 0) {                                                                            \
            printf("not ok %d - %s returned %lld\nBail out!\n", ++st_count, #expr, st_r_);           \
            fflush(stdout);                                                                          \
            exit(1);                                                                                 \
        }                                                                                            \
    } while (0)

__attribute__((unused))
static int st_done(void)
{
    printf("1..%d\n", st_count);
    if (st_failures != 0)
        printf("# %d of %d checks failed\n", st_failures, st_count);
    fflush(stdout);
    return st_failures == 0 ? 0 : 1;
}

__attribute__((unused))
static double st_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Fills buf with a pattern derived from seed. */
__attribute__((unused))
static void st_fill(void *buf, size_t n, uint32_t seed)
{
    unsigned char *p = (unsigned char *)buf;
    uint32_t x = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
}

/* A fresh temporary file name (the file exists, empty) for NPUSIM_LOG. */
__attribute__((unused))
static void st_tempfile(char *path, size_t n, const char *tag)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, n, "%s/npusim-%s-XXXXXX", (dir != NULL && *dir != '\0') ? dir : "/tmp", tag);
    int fd = mkstemp(path);
    if (fd < 0) {
        printf("Bail out! cannot create a temporary file\n");
        exit(1);
    }
    fclose(fdopen(fd, "w"));
}

/* Reads a whole file into a NUL-terminated heap buffer (caller frees). */
__attribute__((unused))
static char *st_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = (char *)malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len - 1 == 0) {
            char *nb = (char *)realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

/* Number of lines of text that start with prefix. */
__attribute__((unused))
static int st_count_lines(const char *text, const char *prefix)
{
    int n = 0;
    size_t plen = strlen(prefix);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, prefix, plen) == 0)
            n++;
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return n;
}

#endif /* NPUSIM_SIMTEST_H */
