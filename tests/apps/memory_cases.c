/*
 * memory_cases.c - the memory situations Ascend users report (pageable copies
 * that silently synchronize, mlock'd but unregistered buffers, kinds that
 * contradict where memory lives, copies past an allocation or from a freed
 * one, leaked pinned buffers), one mode per situation:
 *
 *     memory_cases MODE [N]
 *
 * Modes:
 *   pageable   N non-blocking H2D copies from a malloc'd buffer (default 16)
 *   pinned     the same from aclrtMallocHost memory
 *   mlock      a copy from an mlock'd buffer, then registered
 *              (aclrtHostRegister), then unregistered again
 *   kind3      DEVICE_TO_DEVICE from a pageable buffer into pinned memory
 *   direction  pinned -> device passed as HOST_TO_HOST
 *   bounds     a copy running past the end of an aclrtMalloc block
 *   freed      a copy from a freed block; then a new allocation at the same
 *              address and the same copy again
 *   leak       two pinned buffers never freed
 *   threads    8 threads allocating, freeing and copying at once (N rounds
 *              each, default 40)
 *   fork       copies before, in a forked child and after it
 *   fork-leak  the parent allocates, then a forked child leaks one pinned
 *              buffer of 2 * 16 KiB
 *   memset     aclrtMemsetAsync on pinned host memory
 *   hooks      every allocation, free and registration function once (and one
 *              allocation and one free that fail), with a copy from each kind of
 *              host memory into each kind of device allocation
 *
 * Each step prints "<step> ret <code>"; stdout carries no pointers or timings,
 * so it is the same with and without an interposer (unless one deliberately
 * changes a code).  Exit status: 0 when the setup worked (whatever the steps
 * returned), 1 when it did not, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "acl/acl.h"

#define SZ 16384
#define THREADS 8

static aclrtStream g_stream;

#define SETUP(expr)                                                                    \
    do {                                                                               \
        if ((expr) != 0) {                                                             \
            fprintf(stderr, "memory_cases: setup failed at line %d: %s\n", __LINE__,   \
                    #expr);                                                            \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static void step(const char *name, int ret)
{
    printf("%s ret %d\n", name, ret);
}

/* Host memory the runtime knows nothing about. */
static void *pageable(size_t size)
{
    void *p = NULL;
    SETUP(posix_memalign(&p, 4096, size));
    memset(p, 0x11, size);
    return p;
}

static void *device(size_t size)
{
    void *p = NULL;
    SETUP(aclrtMalloc(&p, size, ACL_MEM_MALLOC_HUGE_FIRST));
    return p;
}

static void *pinned(size_t size)
{
    void *p = NULL;
    SETUP(aclrtMallocHost(&p, size));
    memset(p, 0x22, size);
    return p;
}

static void h2d_loop(void *host, int n)
{
    void *dev = device(SZ);
    for (int i = 0; i < n; i++)
        step("copy", aclrtMemcpyAsync(dev, SZ, host, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    SETUP(aclrtFree(dev));
}

static void mode_mlock(void)
{
    void *buf = pageable(SZ);
    void *dev = device(SZ);
    void *mapped = NULL;
    if (mlock(buf, SZ) != 0) {
        perror("memory_cases: mlock");
        exit(1);
    }
    step("locked", aclrtMemcpyAsync(dev, SZ, buf, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("register", aclrtHostRegister(buf, SZ, ACL_HOST_REGISTER_MAPPED, &mapped));
    step("registered", aclrtMemcpyAsync(dev, SZ, buf, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    step("unregister", aclrtHostUnregister(buf));
    step("unregistered", aclrtMemcpyAsync(dev, SZ, buf, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    munlock(buf, SZ);
    SETUP(aclrtFree(dev));
    free(buf);
}

static void mode_kind3(void)
{
    void *src = pageable(SZ);
    void *dst = pinned(SZ);
    step("kind3", aclrtMemcpyAsync(dst, SZ, src, SZ, ACL_MEMCPY_DEVICE_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    SETUP(aclrtFreeHost(dst));
    free(src);
}

static void mode_direction(void)
{
    void *src = pinned(SZ);
    void *dst = device(SZ);
    step("direction", aclrtMemcpyAsync(dst, SZ, src, SZ, ACL_MEMCPY_HOST_TO_HOST, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    SETUP(aclrtFree(dst));
    SETUP(aclrtFreeHost(src));
}

static void mode_bounds(void)
{
    void *src = pinned(2 * SZ);
    void *dst = device(SZ);
    step("bounds", aclrtMemcpyAsync(dst, 2 * SZ, src, 2 * SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    SETUP(aclrtFree(dst));
    SETUP(aclrtFreeHost(src));
}

static void mode_freed(void)
{
    /* The freed block stays in the process's heap, so a runtime that does copy from it
     * reads mapped memory.  The new allocations are half its size: the allocator carves
     * them out of the freed block (which is already suitably aligned), so one of the
     * first lands exactly where it was.  Small requests made in between (the runtime's
     * queue entries, an interposer's diagnostics) must not carve it first: free chunks
     * of a smaller size class, interleaved with live ones so that they cannot merge,
     * serve them. */
    enum { SMALL = 4096, HALF = SMALL / 2, TRIES = 64, SPARE = 32, SPARE_SIZE = 1000 };
    void *spare[2 * SPARE];
    for (int i = 0; i < 2 * SPARE; i++)
        spare[i] = malloc(SPARE_SIZE);
    for (int i = 0; i < 2 * SPARE; i += 2)
        free(spare[i]);
    void *dst = device(SMALL);
    void *gone = device(SMALL);
    SETUP(aclrtFree(gone));
    step("freed", aclrtMemcpyAsync(dst, SMALL, gone, HALF, ACL_MEMCPY_DEVICE_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    void *held[TRIES];
    int n = 0, reused = 0;
    while (n < TRIES) {
        held[n] = device(HALF);
        if (held[n++] == gone) {
            reused = 1;
            break;
        }
    }
    printf("reused %d\n", reused);
    if (reused)
        step("again", aclrtMemcpyAsync(dst, SMALL, gone, HALF, ACL_MEMCPY_DEVICE_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    for (int i = 0; i < n; i++)
        SETUP(aclrtFree(held[i]));
    SETUP(aclrtFree(dst));
    for (int i = 1; i < 2 * SPARE; i += 2)
        free(spare[i]);
}

static void mode_leak(void)
{
    void *big = pinned(1 << 20);
    void *small = pinned(4096);
    void *dev = device(SZ);
    step("copy", aclrtMemcpyAsync(dev, SZ, big, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    SETUP(aclrtFree(dev));
    (void)small; /* both pinned buffers are left allocated on purpose */
}

struct worker {
    int index;
    int rounds;
    void *pageable;
    int failures;
};

/* Each round: pinned and device allocations, three copies (pinned -> device, pageable ->
 * device, device -> pinned), a wait, both frees. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    aclrtStream s;
    if (aclrtSetDevice(0) != ACL_SUCCESS || aclrtCreateStream(&s) != ACL_SUCCESS) {
        w->failures++;
        return NULL;
    }
    for (int r = 0; r < w->rounds; r++) {
        void *h = NULL, *d = NULL;
        int rc = aclrtMallocHost(&h, 4096);
        rc |= aclrtMalloc(&d, 4096, ACL_MEM_MALLOC_HUGE_FIRST);
        if (rc != ACL_SUCCESS) {
            w->failures++;
            break;
        }
        rc |= aclrtMemcpyAsync(d, 4096, h, 4096, ACL_MEMCPY_HOST_TO_DEVICE, s);
        rc |= aclrtMemcpyAsync(d, 4096, w->pageable, 4096, ACL_MEMCPY_HOST_TO_DEVICE, s);
        rc |= aclrtMemcpyAsync(h, 4096, d, 4096, ACL_MEMCPY_DEVICE_TO_HOST, s);
        rc |= aclrtSynchronizeStream(s);
        rc |= aclrtFree(d);
        rc |= aclrtFreeHost(h);
        w->failures += rc != ACL_SUCCESS;
    }
    aclrtDestroyStream(s);
    return NULL;
}

static void mode_threads(int rounds)
{
    struct worker w[THREADS];
    pthread_t th[THREADS];
    /* Every pageable buffer exists before any runtime memory is freed, so none of them
     * sits where a freed block was. */
    for (int i = 0; i < THREADS; i++)
        w[i] = (struct worker){.index = i, .rounds = rounds, .pageable = pageable(4096)};
    for (int i = 0; i < THREADS; i++)
        SETUP(pthread_create(&th[i], NULL, worker_main, &w[i]));
    for (int i = 0; i < THREADS; i++) {
        SETUP(pthread_join(th[i], NULL));
        printf("thread %d rounds %d failures %d\n", i, rounds, w[i].failures);
    }
    for (int i = 0; i < THREADS; i++)
        free(w[i].pageable);
}

static int child_copies(void *h, void *d, void *p)
{
    aclrtStream s;
    if (aclrtSetDevice(0) != ACL_SUCCESS || aclrtCreateStream(&s) != ACL_SUCCESS)
        return 10;
    int rc = aclrtMemcpyAsync(d, SZ, h, SZ, ACL_MEMCPY_HOST_TO_DEVICE, s);
    rc |= aclrtMemcpyAsync(d, SZ, p, SZ, ACL_MEMCPY_HOST_TO_DEVICE, s);
    rc |= aclrtMemcpyAsync(h, SZ, d, SZ, ACL_MEMCPY_DEVICE_TO_HOST, s);
    rc |= aclrtSynchronizeStream(s);
    return rc == ACL_SUCCESS ? 0 : 11;
}

static void mode_fork(void)
{
    void *p = pageable(SZ);
    void *h = pinned(SZ);
    void *d = device(SZ);
    step("before", aclrtMemcpyAsync(d, SZ, h, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("memory_cases: fork");
        exit(1);
    }
    if (pid == 0)
        exit(child_copies(h, d, p)); /* exit, not _exit: the child's atexit work runs */
    int status = -1;
    SETUP(waitpid(pid, &status, 0) != pid);
    printf("child status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    step("after", aclrtMemcpyAsync(d, SZ, p, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    SETUP(aclrtFree(d));
    SETUP(aclrtFreeHost(h));
    free(p);
}

static void mode_fork_leak(void)
{
    void *h = pinned(SZ);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("memory_cases: fork");
        exit(1);
    }
    if (pid == 0) {
        void *leaked = NULL;
        if (aclrtSetDevice(0) != ACL_SUCCESS)
            exit(10);
        exit(aclrtMallocHost(&leaked, 2 * SZ) == ACL_SUCCESS ? 0 : 11);
    }
    int status = -1;
    SETUP(waitpid(pid, &status, 0) != pid);
    printf("child status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    SETUP(aclrtFreeHost(h));
}

static void mode_memset(void)
{
    void *h = pinned(SZ);
    step("memset", aclrtMemsetAsync(h, SZ, 0x5a, SZ, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    SETUP(aclrtFreeHost(h));
}

static void mode_hooks(void)
{
    void *a = NULL, *b = NULL, *c = NULL, *d = NULL, *h = NULL, *h2 = NULL, *mapped = NULL, *none = NULL;
    void *r = pageable(SZ), *r2 = pageable(SZ);
    step("aclrtMalloc", aclrtMalloc(&a, SZ, ACL_MEM_MALLOC_HUGE_FIRST));
    step("aclrtMallocAlign32", aclrtMallocAlign32(&b, SZ, ACL_MEM_MALLOC_HUGE_ONLY));
    step("aclrtMallocCached", aclrtMallocCached(&c, SZ, ACL_MEM_MALLOC_NORMAL_ONLY));
    step("aclrtMallocWithCfg", aclrtMallocWithCfg(&d, SZ, ACL_MEM_MALLOC_HUGE_FIRST_P2P, NULL));
    step("aclrtMalloc_zero", aclrtMalloc(&none, 0, ACL_MEM_MALLOC_HUGE_FIRST));
    step("aclrtMallocHost", aclrtMallocHost(&h, SZ));
    step("aclrtMallocHostWithCfg", aclrtMallocHostWithCfg(&h2, SZ, NULL));
    step("aclrtHostRegister", aclrtHostRegister(r, SZ, ACL_HOST_REGISTER_MAPPED, &mapped));
    step("aclrtHostRegisterV2", aclrtHostRegisterV2(r2, SZ, ACL_HOST_REG_PINNED));
    step("copy_pinned", aclrtMemcpyAsync(a, SZ, h, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("copy_pinned_cfg", aclrtMemcpyAsync(b, SZ, h2, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("copy_registered", aclrtMemcpyAsync(c, SZ, r, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("copy_registered_v2", aclrtMemcpyAsync(d, SZ, r2, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    /* A free the runtime refuses (pinned memory given to aclrtFree) frees nothing. */
    step("aclrtFree_pinned", aclrtFree(h));
    step("copy_after_refused_free", aclrtMemcpyAsync(a, SZ, h, SZ, ACL_MEMCPY_HOST_TO_DEVICE, g_stream));
    step("sync", aclrtSynchronizeStream(g_stream));
    step("aclrtHostUnregister", aclrtHostUnregister(r));
    step("aclrtHostUnregister_v2", aclrtHostUnregister(r2));
    step("aclrtFree", aclrtFree(a));
    step("aclrtFree_align32", aclrtFree(b));
    step("aclrtFree_cached", aclrtFree(c));
    step("aclrtFree_cfg", aclrtFree(d));
    step("aclrtFreeHost", aclrtFreeHost(h));
    step("aclrtFreeHost_cfg", aclrtFreeHost(h2));
    free(r);
    free(r2);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: memory_cases MODE [N]\n");
        return 2;
    }
    const char *mode = argv[1];
    int n = argc == 3 ? atoi(argv[2]) : -1;
    /* stdio's own buffer is static: a first printf must not take heap memory that a
     * mode freed and expects the runtime to hand out again. */
    static char out_buf[BUFSIZ];
    setvbuf(stdout, out_buf, _IOFBF, sizeof out_buf);
    SETUP(aclInit(NULL));
    SETUP(aclrtSetDevice(0));
    SETUP(aclrtCreateStream(&g_stream));
    if (strcmp(mode, "pageable") == 0) {
        void *buf = pageable(SZ);
        h2d_loop(buf, n > 0 ? n : 16);
        free(buf);
    } else if (strcmp(mode, "pinned") == 0) {
        void *buf = pinned(SZ);
        h2d_loop(buf, n > 0 ? n : 16);
        SETUP(aclrtFreeHost(buf));
    } else if (strcmp(mode, "mlock") == 0) {
        mode_mlock();
    } else if (strcmp(mode, "kind3") == 0) {
        mode_kind3();
    } else if (strcmp(mode, "direction") == 0) {
        mode_direction();
    } else if (strcmp(mode, "bounds") == 0) {
        mode_bounds();
    } else if (strcmp(mode, "freed") == 0) {
        mode_freed();
    } else if (strcmp(mode, "leak") == 0) {
        mode_leak();
    } else if (strcmp(mode, "threads") == 0) {
        mode_threads(n > 0 ? n : 40);
    } else if (strcmp(mode, "fork") == 0) {
        mode_fork();
    } else if (strcmp(mode, "fork-leak") == 0) {
        mode_fork_leak();
    } else if (strcmp(mode, "memset") == 0) {
        mode_memset();
    } else if (strcmp(mode, "hooks") == 0) {
        mode_hooks();
    } else {
        fprintf(stderr, "memory_cases: unknown mode %s\n", mode);
        return 2;
    }
    SETUP(aclrtDestroyStream(g_stream));
    SETUP(aclFinalize());
    return 0;
}
