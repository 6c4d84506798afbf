/*
 * late_load.c - libnpushim.so loaded with dlopen() long after start (not
 * preloaded, not linked), as a Python program loading it with ctypes does,
 * while another thread is already running.  The library keeps its per-thread
 * words in static TLS, so this is the case where glibc must find room for them
 * and set them up in the threads that already exist.
 *
 * The program links libascendcl.so itself, then dlopen()s the library given
 * as argv[1] (RTLD_NOW | RTLD_LOCAL), calls its npushim_version() and, through
 * dlsym(handle, "aclrtMemcpyAsync"), copies host -> device -> host from the
 * main thread and from the thread that was started before the dlopen, and
 * checks every byte.
 *
 * usage: late_load path-to-libnpushim.so
 * stdout: "loaded <version>", then "thread <name>: copied and verified" twice.
 * exit status: 0 when everything succeeded, 1 otherwise (with the reason).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "acl/acl.h"

typedef aclError (*copy_fn)(void *, size_t, const void *, size_t, aclrtMemcpyKind, aclrtStream);
typedef const char *(*version_fn)(void);

enum { BYTES = 4096 };

static copy_fn g_copy;
static aclrtContext g_ctx;
static aclrtStream g_stream;
static void *g_dev;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static int g_loaded;

/* Host -> device -> host through the library's export; 0 when every byte came back. */
static int round_trip(const char *who, unsigned char seed)
{
    unsigned char out[BYTES], back[BYTES];
    for (int i = 0; i < BYTES; i++)
        out[i] = (unsigned char)(seed + i);
    memset(back, 0, sizeof back);
    if (g_copy(g_dev, BYTES, out, BYTES, ACL_MEMCPY_HOST_TO_DEVICE, g_stream) != ACL_SUCCESS ||
        g_copy(back, BYTES, g_dev, BYTES, ACL_MEMCPY_DEVICE_TO_HOST, g_stream) != ACL_SUCCESS ||
        aclrtSynchronizeStream(g_stream) != ACL_SUCCESS) {
        printf("thread %s: copy failed\n", who);
        return 1;
    }
    if (memcmp(out, back, BYTES) != 0) {
        printf("thread %s: bytes differ\n", who);
        return 1;
    }
    printf("thread %s: copied and verified\n", who);
    return 0;
}

/* Started before the dlopen; copies once the library is there. */
static void *early_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_lock);
    while (!g_loaded)
        pthread_cond_wait(&g_cond, &g_lock);
    pthread_mutex_unlock(&g_lock);
    if (aclrtSetCurrentContext(g_ctx) != ACL_SUCCESS)
        return (void *)1;
    return round_trip("early", 7) == 0 ? NULL : (void *)1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: late_load path-to-libnpushim.so\n");
        return 2;
    }
    if (aclInit(NULL) != ACL_SUCCESS || aclrtSetDevice(0) != ACL_SUCCESS ||
        aclrtGetCurrentContext(&g_ctx) != ACL_SUCCESS || aclrtCreateStream(&g_stream) != ACL_SUCCESS ||
        aclrtMalloc(&g_dev, BYTES, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS) {
        printf("setup failed\n");
        return 1;
    }
    pthread_t early;
    if (pthread_create(&early, NULL, early_thread, NULL) != 0) {
        printf("pthread_create failed\n");
        return 1;
    }

    void *shim = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (shim == NULL) {
        printf("dlopen failed: %s\n", dlerror());
        return 1;
    }
    version_fn version = (version_fn)dlsym(shim, "npushim_version");
    g_copy = (copy_fn)dlsym(shim, "aclrtMemcpyAsync");
    if (version == NULL || g_copy == NULL) {
        printf("dlsym failed\n");
        return 1;
    }
    printf("loaded %s\n", version());
    fflush(stdout);

    int failed = round_trip("main", 3);
    fflush(stdout);
    pthread_mutex_lock(&g_lock);
    g_loaded = 1;
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
    void *result = NULL;
    pthread_join(early, &result);
    failed |= result != NULL;
    aclrtFree(g_dev);
    aclrtDestroyStream(g_stream);
    aclrtResetDevice(0);
    aclFinalize();
    return failed;
}
