/*
 * acl_threads.c - the simulated runtime under concurrent use.
 *
 * Eight threads, one per device, each with two streams, run pinned and
 * pageable round trips concurrently and verify every byte; streams are shared
 * between threads of the same device and rejected across devices; memory
 * accounting stays consistent; the NPUSIM_LOG file gets exactly one intact
 * line per call from all threads.  Sets NPUSIM_LOG and NPUSIM_GBPS itself.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"
#include "simtest.h"

#define THREADS 8
#define ROUNDS 40
#define SZ (64 * 1024)

struct worker {
    int rank;
    int errors;
    int mismatches;
    int calls;
};

static aclrtStream g_shared_stream; /* created on device 0 by main */
static pthread_barrier_t g_barrier;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    aclrtStream s[2] = { NULL, NULL };
    void *dev = NULL, *dev2 = NULL, *pin_src = NULL, *pin_dst = NULL;
    unsigned char *pg_src = NULL, *pg_dst = NULL;

    if (aclrtSetDevice(w->rank) != ACL_SUCCESS || aclrtCreateStream(&s[0]) != ACL_SUCCESS ||
        aclrtCreateStream(&s[1]) != ACL_SUCCESS || aclrtMalloc(&dev, SZ, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS ||
        aclrtMalloc(&dev2, SZ, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS || aclrtMallocHost(&pin_src, SZ) != ACL_SUCCESS ||
        aclrtMallocHost(&pin_dst, SZ) != ACL_SUCCESS || posix_memalign((void **)&pg_src, 64, SZ) != 0 ||
        posix_memalign((void **)&pg_dst, 64, SZ) != 0) {
        w->errors++;
        return NULL;
    }
    pthread_barrier_wait(&g_barrier);
    for (int r = 0; r < ROUNDS; r++) {
        aclrtStream st = s[r % 2];
        uint32_t seed = (uint32_t)(w->rank * 1000 + r);
        if (r % 3 == 0) {
            st_fill(pg_src, SZ, seed);
            w->errors += aclrtMemcpyAsync(dev, SZ, pg_src, SZ, ACL_MEMCPY_HOST_TO_DEVICE, st) != ACL_SUCCESS;
            w->errors += aclrtMemcpyAsync(dev2, SZ, dev, SZ, ACL_MEMCPY_DEVICE_TO_DEVICE, st) != ACL_SUCCESS;
            w->errors += aclrtMemcpyAsync(pg_dst, SZ, dev2, SZ, ACL_MEMCPY_DEVICE_TO_HOST, st) != ACL_SUCCESS;
            w->calls += 3;
            w->mismatches += memcmp(pg_dst, pg_src, SZ) != 0;
        } else {
            st_fill(pin_src, SZ, seed);
            w->errors += aclrtMemcpyAsync(dev, SZ, pin_src, SZ, ACL_MEMCPY_HOST_TO_DEVICE, st) != ACL_SUCCESS;
            w->errors += aclrtMemcpyAsync(dev2, SZ, dev, SZ, ACL_MEMCPY_DEVICE_TO_DEVICE, st) != ACL_SUCCESS;
            w->errors += aclrtMemcpyAsync(pin_dst, SZ, dev2, SZ, ACL_MEMCPY_DEVICE_TO_HOST, st) != ACL_SUCCESS;
            w->calls += 3;
            w->errors += aclrtSynchronizeStream(st) != ACL_SUCCESS;
            w->mismatches += memcmp(pin_dst, pin_src, SZ) != 0;
        }
    }
    /* Streams of the same device may be used from any thread; others not. */
    aclError shared = aclrtMemcpyAsync(dev, SZ, pin_src, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_shared_stream);
    w->calls++;
    if (shared != (w->rank == 0 ? ACL_SUCCESS : ACL_ERROR_RT_STREAM_CONTEXT))
        w->errors++;
    if (w->rank == 0)
        aclrtSynchronizeStream(g_shared_stream);

    aclrtDestroyStream(s[0]);
    aclrtDestroyStream(s[1]);
    aclrtFree(dev);
    aclrtFree(dev2);
    aclrtFreeHost(pin_src);
    aclrtFreeHost(pin_dst);
    free(pg_src);
    free(pg_dst);
    w->errors += aclrtResetDevice(w->rank) != ACL_SUCCESS;
    return NULL;
}

int main(void)
{
    char logpath[256];
    st_tempfile(logpath, sizeof logpath, "threads-log");
    setenv("NPUSIM_LOG", logpath, 1);
    setenv("NPUSIM_GBPS", "20", 1);
    unsetenv("NPUSIM_DEVICES");
    unsetenv("NPUSIM_SOC");

    REQUIRE_OK(aclInit(NULL));
    REQUIRE_OK(aclrtSetDevice(0));
    REQUIRE_OK(aclrtCreateStream(&g_shared_stream));
    size_t free0 = 0, total = 0;
    REQUIRE_OK(aclrtGetMemInfo(ACL_HBM_MEM, &free0, &total));

    pthread_barrier_init(&g_barrier, NULL, THREADS);
    pthread_t th[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].rank = i;
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    int calls = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(w[i].errors, 0, "device %d: every call returned the expected code", i);
        CHECK_EQ(w[i].mismatches, 0, "device %d: every round trip is bit-exact", i);
        calls += w[i].calls;
    }
    pthread_barrier_destroy(&g_barrier);

    size_t free1 = 0;
    REQUIRE_OK(aclrtGetMemInfo(ACL_HBM_MEM, &free1, &total));
    CHECK_EQ(free1, free0, "all device memory returned");
    int32_t dev = -1;
    CHECK_EQ(aclrtGetDevice(&dev), ACL_SUCCESS, "main thread keeps device 0 while workers reset theirs");
    CHECK_EQ(dev, 0, "main thread's device is 0");

    char *text = st_slurp(logpath);
    CHECK(text != NULL, "log file readable");
    if (text != NULL) {
        int lines = 0, intact = 0;
        for (char *p = text; *p != '\0';) {
            char *nl = strchr(p, '\n');
            if (nl == NULL)
                break;
            *nl = '\0';
            lines++;
            intact += strncmp(p, "aclrtMemcpyAsync dst=", 21) == 0 && strstr(p, " ret=") != NULL &&
                      strstr(p + 1, "aclrtMemcpyAsync") == NULL;
            p = nl + 1;
        }
        CHECK_EQ(lines, calls, "one log line per call from %d threads", THREADS);
        CHECK_EQ(intact, calls, "no interleaved log lines");
        free(text);
    }
    unlink(logpath);

    REQUIRE_OK(aclrtDestroyStream(g_shared_stream));
    REQUIRE_OK(aclrtResetDevice(0));
    REQUIRE_OK(aclFinalize());
    return st_done();
}
