/*
 * hostile_churn.c - many short-lived threads, one copy each, created and
 * joined one after another (thread pools that do not pool, per-request threads).
 *
 * usage: hostile_churn [threads]      (default 100000)
 * stdout: "done"; stderr: "hostile_churn: threads=N peak_rss_kib=K" with the
 * process's peak resident set (VmHWM) at the end.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"

static aclrtContext g_ctx;
static aclrtStream g_stream;
static void *g_dev;
static void *g_host;

static void *one_copy(void *arg)
{
    (void)arg;
    if (aclrtSetCurrentContext(g_ctx) != ACL_SUCCESS)
        return (void *)1;
    aclError ret = aclrtMemcpyAsync(g_dev, 64, g_host, 64, ACL_MEMCPY_HOST_TO_DEVICE, g_stream);
    return ret == ACL_SUCCESS ? NULL : (void *)1;
}

static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = atol(line + 6);
    }
    if (f != NULL)
        fclose(f);
    return kib;
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? atol(argv[1]) : 100000;
    if (aclInit(NULL) != ACL_SUCCESS || aclrtSetDevice(0) != ACL_SUCCESS || aclrtGetCurrentContext(&g_ctx) != ACL_SUCCESS ||
        aclrtCreateStream(&g_stream) != ACL_SUCCESS || aclrtMalloc(&g_dev, 64, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS || aclrtMallocHost(&g_host, 64) != ACL_SUCCESS) {
        fprintf(stderr, "hostile_churn: setup failed\n");
        return 1;
    }
    long failed = 0;
    for (long i = 0; i < threads; i++) {
        pthread_t t;
        void *result = NULL;
        if (pthread_create(&t, NULL, one_copy, NULL) != 0) {
            failed++;
            continue;
        }
        pthread_join(t, &result);
        failed += result != NULL;
    }
    aclrtSynchronizeStream(g_stream);
    fprintf(stderr, "hostile_churn: threads=%ld peak_rss_kib=%ld\n", threads, peak_rss_kib());
    printf(failed == 0 ? "done\n" : "copies failed\n");
    return failed == 0 ? 0 : 1;
}
