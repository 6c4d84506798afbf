/*
 * harness.c - per-call overhead benchmark for aclrtMemcpyAsync.
 *
 * Calls aclrtMemcpyAsync in a tight loop through the PLT, on one or more
 * threads, and prints one machine-readable line per run:
 *
 *   threads=1 calls=20000000 ns_per_call=1.52 ns_min=1.52 ns_max=1.52 cpu_ns_per_call=1.50 ...
 *
 * `calls` is per thread; `ns_per_call` is each thread's own loop time
 * (CLOCK_MONOTONIC) divided by its calls, averaged over the threads (ns_min /
 * ns_max: the fastest and slowest thread).  `cpu_ns_per_call` is the same with
 * each thread's CPU time (CLOCK_THREAD_CPUTIME_ID): it leaves out the time the
 * thread was preempted or asleep, so it is steadier on a busy machine, and it
 * also leaves out any time an interposer makes the caller wait.  Linked against the no-op libascendcl.so from
 * tests/bench/noop_acl.c, so without LD_PRELOAD it measures the bare PLT call;
 * with an interposer in LD_PRELOAD the difference is the interposer's cost.
 *
 * The arguments are valid-looking (64-byte aligned, count <= destMax,
 * HOST_TO_DEVICE, non-NULL stream) so a checking interposer takes its common
 * path; nothing ever dereferences them.
 *
 * Usage: harness [--fn F] [--live N] [--calls N] [--threads T] [--warmup N]
 *                [--burst N [--gap-us G]] [--rss]
 *   --fn F     the function called: memcpy-async (default), memcpy (aclrtMemcpy),
 *              d2d (HcclD2DMemcpyAsync), sync-stream (aclrtSynchronizeStream),
 *              malloc or free (aclrtMalloc + aclrtFree in batches of 256: each
 *              batch of allocations, then of frees, timed on its own; `malloc`
 *              reports the allocations' time, `free` the frees').  These two
 *              modes turn off glibc's heap trimming first (see main), so the
 *              timed loops measure the calls, not page faults on regrowth.
 *   --live N   first make N device allocations (aclrtMalloc, 512 bytes) that
 *              stay live for the whole run, and copy from a pinned buffer
 *              (aclrtMallocHost) into a device buffer (aclrtMalloc) instead of
 *              between static buffers: an interposer that keeps a map of the
 *              program's allocations then classifies against N entries.
 *   --burst N  paced mode: the calls come in bursts of N, each followed by an
 *              idle gap of G microseconds (default 2000); only the bursts are
 *              timed.  This is the cost a program that computes between copies
 *              sees, with a tracer's background work done in the gaps.
 *   --rss  also print the process's peak resident set (VmHWM) after the run,
 *          and the user and system CPU time of the threads the harness did not
 *          create (an interposer's trace writer): aux_user_ms, aux_sys_ms.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "acl/acl.h"

/* hccl::DeviceMem's ABI (references are passed as pointers): ptr_ at 0, size_ at 8. */
struct device_mem {
    void *ptr;
    uint64_t size;
    _Bool owner;
};
int HcclD2DMemcpyAsync(void *dispatcher, struct device_mem *dst, const struct device_mem *src, void *stream,
                       uint32_t remoteUserRank, int linkType);

enum fn { FN_MEMCPY_ASYNC, FN_MEMCPY, FN_D2D, FN_SYNC_STREAM, FN_MALLOC, FN_FREE };
static const char *const fn_names[] = { "memcpy-async", "memcpy", "d2d", "sync-stream", "malloc", "free" };
enum { ALLOC_BATCH = 256, ALLOC_BYTES = 4096 };

/* Host-side buffers the copies "use": aligned as the runtime requires. */
enum { BUF_BYTES = 4096, COPY_BYTES = 1024, MAX_THREADS = 64 };
static unsigned char src_buf[MAX_THREADS][BUF_BYTES] __attribute__((aligned(64)));
static unsigned char dst_buf[MAX_THREADS][BUF_BYTES] __attribute__((aligned(64)));
static char stream_token[MAX_THREADS][64] __attribute__((aligned(64)));

struct worker {
    pthread_t thread;
    int index;
    enum fn fn;
    int live;
    uint64_t calls;
    uint64_t warmup;
    uint64_t burst;
    uint64_t gap_us;
    pthread_barrier_t *start;
    uint64_t loop_ns;
    uint64_t loop_cpu_ns;
    uint64_t errors;
};

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The measured loop.  noinline keeps it one clear unit for profilers; the
 * empty asm with a memory clobber stops the compiler from assuming anything
 * about memory across iterations. */
static __attribute__((noinline)) uint64_t copy_loop(uint64_t n, void *dst, const void *src, aclrtStream stream)
{
    uint64_t errors = 0;
    for (uint64_t i = 0; i < n; i++) {
        aclError ret = aclrtMemcpyAsync(dst, BUF_BYTES, src, COPY_BYTES, ACL_MEMCPY_HOST_TO_DEVICE, stream);
        errors += (ret != ACL_SUCCESS);
        __asm__ volatile("" ::: "memory");
    }
    return errors;
}

static __attribute__((noinline)) uint64_t memcpy_loop(uint64_t n, void *dst, const void *src)
{
    uint64_t errors = 0;
    for (uint64_t i = 0; i < n; i++) {
        aclError ret = aclrtMemcpy(dst, BUF_BYTES, src, COPY_BYTES, ACL_MEMCPY_HOST_TO_DEVICE);
        errors += (ret != ACL_SUCCESS);
        __asm__ volatile("" ::: "memory");
    }
    return errors;
}

static __attribute__((noinline)) uint64_t d2d_loop(uint64_t n, struct device_mem *dst, const struct device_mem *src,
                                                   void *stream)
{
    uint64_t errors = 0;
    for (uint64_t i = 0; i < n; i++) {
        int ret = HcclD2DMemcpyAsync(stream, dst, src, stream, 1, 0);
        errors += (ret != 0);
        __asm__ volatile("" ::: "memory");
    }
    return errors;
}

static __attribute__((noinline)) uint64_t sync_loop(uint64_t n, aclrtStream stream)
{
    uint64_t errors = 0;
    for (uint64_t i = 0; i < n; i++) {
        aclError ret = aclrtSynchronizeStream(stream);
        errors += (ret != ACL_SUCCESS);
        __asm__ volatile("" ::: "memory");
    }
    return errors;
}

static __attribute__((noinline)) uint64_t malloc_batch(void **ptrs, uint64_t n)
{
    uint64_t errors = 0;
    for (uint64_t i = 0; i < n; i++) {
        aclError ret = aclrtMalloc(&ptrs[i], ALLOC_BYTES, ACL_MEM_MALLOC_HUGE_FIRST);
        errors += (ret != ACL_SUCCESS);
        __asm__ volatile("" ::: "memory");
    }
    return errors;
}

static __attribute__((noinline)) uint64_t free_batch(void **ptrs, uint64_t n)
{
    uint64_t errors = 0;
    for (uint64_t i = 0; i < n; i++) {
        aclError ret = aclrtFree(ptrs[i]);
        errors += (ret != ACL_SUCCESS);
        __asm__ volatile("" ::: "memory");
    }
    return errors;
}

/* The `--fn malloc|free` loop: batches of allocations, then of frees; only the half the
 * run reports is timed into the worker. */
static uint64_t alloc_free_loop(struct worker *w, uint64_t n, int timed)
{
    void *ptrs[ALLOC_BATCH];
    uint64_t errors = 0;
    for (uint64_t done = 0; done < n;) {
        uint64_t b = n - done < ALLOC_BATCH ? n - done : ALLOC_BATCH;
        uint64_t c0 = now_ns(CLOCK_THREAD_CPUTIME_ID), t0 = now_ns(CLOCK_MONOTONIC);
        errors += malloc_batch(ptrs, b);
        uint64_t t1 = now_ns(CLOCK_MONOTONIC), c1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
        errors += free_batch(ptrs, b);
        uint64_t t2 = now_ns(CLOCK_MONOTONIC), c2 = now_ns(CLOCK_THREAD_CPUTIME_ID);
        if (timed && w->fn == FN_MALLOC) {
            w->loop_ns += t1 - t0;
            w->loop_cpu_ns += c1 - c0;
        } else if (timed) {
            /* c1 -> c2 also holds the second clock read of the allocations' half. */
            w->loop_ns += t2 - t1;
            w->loop_cpu_ns += c2 - c1;
        }
        done += b;
    }
    return errors;
}

/* One untimed or timed stretch of n calls of the worker's function. */
static uint64_t calls_of(struct worker *w, uint64_t n, void *dst, const void *src, aclrtStream stream,
                         struct device_mem *dmem)
{
    switch (w->fn) {
    case FN_MEMCPY:
        return memcpy_loop(n, dst, src);
    case FN_D2D:
        return d2d_loop(n, &dmem[0], &dmem[1], stream);
    case FN_SYNC_STREAM:
        return sync_loop(n, stream);
    case FN_MALLOC:
    case FN_FREE:
        return alloc_free_loop(w, n, 0);
    case FN_MEMCPY_ASYNC:
    default:
        return copy_loop(n, dst, src, stream);
    }
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    void *dst = dst_buf[w->index];
    const void *src = src_buf[w->index];
    aclrtStream stream = stream_token[w->index];
    if (w->live) {
        /* Copy from pinned host memory into device memory, both allocated through the
         * runtime (so a map of allocations knows them). */
        void *d = NULL, *h = NULL;
        if (aclrtMalloc(&d, BUF_BYTES, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS ||
            aclrtMallocHost(&h, BUF_BYTES) != ACL_SUCCESS) {
            fprintf(stderr, "harness: aclrtMalloc/aclrtMallocHost failed\n");
            exit(1);
        }
        dst = d;
        src = h;
    }
    struct device_mem dmem[2] = { { dst, BUF_BYTES, 0 }, { (void *)src, COPY_BYTES, 0 } };

    /* Warm-up: first-call initialisation (symbol resolution, an interposer's
     * lazy setup, trace file creation, per-thread buffers) and caches. */
    calls_of(w, w->warmup, dst, src, stream, dmem);

    pthread_barrier_wait(w->start);
    if (w->fn == FN_MALLOC || w->fn == FN_FREE) {
        w->errors = alloc_free_loop(w, w->calls, 1);
        return NULL;
    }
    if (w->burst == 0) {
        uint64_t c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
        uint64_t t0 = now_ns(CLOCK_MONOTONIC);
        w->errors = calls_of(w, w->calls, dst, src, stream, dmem);
        uint64_t t1 = now_ns(CLOCK_MONOTONIC);
        uint64_t c1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
        w->loop_ns = t1 - t0;
        w->loop_cpu_ns = c1 - c0;
        return NULL;
    }
    /* Paced: bursts of calls separated by idle gaps (a program that computes
     * between copies); only the bursts are timed. */
    for (uint64_t done = 0; done < w->calls;) {
        uint64_t n = w->calls - done < w->burst ? w->calls - done : w->burst;
        uint64_t c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
        uint64_t t0 = now_ns(CLOCK_MONOTONIC);
        w->errors += calls_of(w, n, dst, src, stream, dmem);
        uint64_t t1 = now_ns(CLOCK_MONOTONIC);
        uint64_t c1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
        w->loop_ns += t1 - t0;
        w->loop_cpu_ns += c1 - c0;
        done += n;
        struct timespec gap = {(time_t)(w->gap_us / 1000000), (long)(w->gap_us % 1000000) * 1000};
        while (nanosleep(&gap, &gap) != 0 && errno == EINTR) {
        }
    }
    return NULL;
}

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    size_t klen = strlen(key);
    long value = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            value = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return value;
}

/* CPU time (user, system; ms) of the process's threads that the harness did
 * not create, e.g. an interposer's trace writer.  The harness's own threads
 * keep the program's name as their name; any other name is someone else's. */
static void aux_thread_cpu(long *user_ms, long *sys_ms)
{
    *user_ms = *sys_ms = 0;
    DIR *dir = opendir("/proc/self/task");
    if (dir == NULL)
        return;
    long hz = sysconf(_SC_CLK_TCK);
    struct dirent *d;
    while ((d = readdir(dir)) != NULL) {
        if (d->d_name[0] == '.')
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", d->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        if (open == NULL || close == NULL)
            continue;
        *close = '\0';
        if (strcmp(open + 1, program_invocation_short_name) == 0)
            continue;
        /* After ") ": state is field 3; utime and stime are fields 14 and 15. */
        unsigned long utime = 0, stime = 0;
        if (sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) == 2) {
            *user_ms += (long)(utime * 1000 / (unsigned long)hz);
            *sys_ms += (long)(stime * 1000 / (unsigned long)hz);
        }
    }
    closedir(dir);
}

static uint64_t parse_count(const char *opt, const char *s)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s) {
        fprintf(stderr, "harness: %s expects a number, got '%s'\n", opt, s);
        exit(2);
    }
    if (*end == 'k' || *end == 'K') {
        v *= 1000ull;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1000000ull;
        end++;
    }
    if (*end != '\0') {
        fprintf(stderr, "harness: %s expects a number (K/M suffix allowed), got '%s'\n", opt, s);
        exit(2);
    }
    return v;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: harness [--fn F] [--live N] [--calls N] [--threads T] [--warmup N] [--burst N [--gap-us G]]"
                 " [--rss]\n"
                 "  --fn F       memcpy-async (default), memcpy, d2d, sync-stream, malloc or free\n"
                 "  --live N     N live device allocations during the run; copies between runtime\n"
                 "               allocations (pinned host -> device)\n"
                 "  --calls N    calls per thread in the measured loop (default 20M; K/M suffixes)\n"
                 "  --threads T  threads calling concurrently (default 1, max %d)\n"
                 "  --warmup N   calls per thread before timing (default min(calls/10, 1M))\n"
                 "  --burst N    paced: calls in bursts of N with an idle gap after each; only\n"
                 "               the bursts are timed (default 0: one tight loop)\n"
                 "  --gap-us G   the idle gap after each burst, in microseconds (default 2000)\n"
                 "  --rss        print the peak resident set (VmHWM) after the run, and the CPU\n"
                 "               time of threads the harness did not create (aux_user_ms, aux_sys_ms)\n",
            MAX_THREADS);
}

int main(int argc, char **argv)
{
    uint64_t calls = 20000000;
    uint64_t warmup = UINT64_MAX;
    long threads = 1;
    int want_rss = 0;
    uint64_t burst = 0, gap_us = 2000, live = 0;
    enum fn fn = FN_MEMCPY_ASYNC;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--calls") == 0 && i + 1 < argc) {
            calls = parse_count(a, argv[++i]);
        } else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
            threads = (long)parse_count(a, argv[++i]);
        } else if (strcmp(a, "--warmup") == 0 && i + 1 < argc) {
            warmup = parse_count(a, argv[++i]);
        } else if (strcmp(a, "--burst") == 0 && i + 1 < argc) {
            burst = parse_count(a, argv[++i]);
        } else if (strcmp(a, "--gap-us") == 0 && i + 1 < argc) {
            gap_us = parse_count(a, argv[++i]);
        } else if (strcmp(a, "--fn") == 0 && i + 1 < argc) {
            const char *name = argv[++i];
            size_t k = 0;
            while (k < sizeof fn_names / sizeof fn_names[0] && strcmp(fn_names[k], name) != 0)
                k++;
            if (k == sizeof fn_names / sizeof fn_names[0]) {
                fprintf(stderr, "harness: unknown --fn '%s'\n", name);
                usage(stderr);
                return 2;
            }
            fn = (enum fn)k;
        } else if (strcmp(a, "--live") == 0 && i + 1 < argc) {
            live = parse_count(a, argv[++i]);
        } else if (strcmp(a, "--rss") == 0) {
            want_rss = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "harness: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (calls == 0 || threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "harness: need --calls >= 1 and 1 <= --threads <= %d\n", MAX_THREADS);
        return 2;
    }
    if (warmup == UINT64_MAX)
        warmup = calls / 10 < 1000000 ? calls / 10 : 1000000;

    /* The allocation modes measure the hook, not glibc's heap: by default, freeing a batch
     * merges it into the top of the heap and, once that top passes the trim threshold,
     * gives the pages back (madvise/sbrk), so the next batch takes a page fault per
     * allocation.  Whether and how often that happens depends on what else the process has
     * allocated in the arena (an interposer's own bookkeeping can keep the top from being
     * trimmed, or not), so the same runtime call cost 165 ns in one configuration and 650
     * in another.  Never trimming (set once, before any allocation, for every
     * configuration alike) leaves the pages the warm-up faulted in resident: the timed
     * loop sees no page faults, whatever the preload.  Setting the trim threshold also
     * pins the mmap threshold at its default (no dynamic adjustment); it is set
     * explicitly anyway, so every configuration uses the same one. */
    if (fn == FN_MALLOC || fn == FN_FREE) {
        if (mallopt(M_TRIM_THRESHOLD, 1 << 30) != 1 || mallopt(M_MMAP_THRESHOLD, 128 * 1024) != 1) {
            fprintf(stderr, "harness: mallopt failed\n");
            return 1;
        }
    }

    /* Allocations that stay live for the whole run (never freed: the process exits). */
    for (uint64_t k = 0; k < live; k++) {
        void *p = NULL;
        if (aclrtMalloc(&p, 512, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS) {
            fprintf(stderr, "harness: aclrtMalloc failed after %" PRIu64 " live allocations\n", k);
            return 1;
        }
    }

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    struct worker workers[MAX_THREADS];
    for (long t = 0; t < threads; t++) {
        workers[t] = (struct worker){
            .index = (int)t,
            .fn = fn,
            .live = live > 0,
            .calls = calls,
            .warmup = warmup,
            .burst = burst,
            .gap_us = gap_us,
            .start = &start,
        };
        int rc = pthread_create(&workers[t].thread, NULL, run_worker, &workers[t]);
        if (rc != 0) {
            fprintf(stderr, "harness: pthread_create: %s\n", strerror(rc));
            return 1;
        }
    }
    double sum = 0, min = 0, max = 0, cpu_sum = 0;
    uint64_t errors = 0;
    for (long t = 0; t < threads; t++) {
        pthread_join(workers[t].thread, NULL);
        double ns = (double)workers[t].loop_ns / (double)calls;
        sum += ns;
        min = (t == 0 || ns < min) ? ns : min;
        max = (t == 0 || ns > max) ? ns : max;
        cpu_sum += (double)workers[t].loop_cpu_ns / (double)calls;
        errors += workers[t].errors;
    }
    pthread_barrier_destroy(&start);

    /* Wall-clock instant the loops ended, so a caller can time what happens
     * between here and process exit (e.g. an interposer's final flush). */
    uint64_t end_realtime = now_ns(CLOCK_REALTIME);

    printf("threads=%ld calls=%" PRIu64 " ns_per_call=%.3f ns_min=%.3f ns_max=%.3f cpu_ns_per_call=%.3f"
           " errors=%" PRIu64 " end_realtime_ns=%" PRIu64 " fn=%s",
           threads, calls, sum / (double)threads, min, max, cpu_sum / (double)threads, errors, end_realtime, fn_names[fn]);
    if (want_rss) {
        long aux_user, aux_sys;
        aux_thread_cpu(&aux_user, &aux_sys);
        printf(" vmhwm_kb=%ld vmrss_kb=%ld aux_user_ms=%ld aux_sys_ms=%ld", status_kb("VmHWM"), status_kb("VmRSS"),
               aux_user, aux_sys);
    }
    printf("\n");
    fflush(stdout);
    return errors == 0 ? 0 : 1;
}
