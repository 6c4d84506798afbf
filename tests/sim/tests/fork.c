/* fork() while another thread keeps copying: the child can use the runtime (new device
 * context, new stream, copies, synchronize) and exits normally; the parent's streams keep
 * working. Real programs fork (data-loader workers, subprocess launches) while their
 * runtime threads are busy, and an interposer's tests do the same. */
#define _GNU_SOURCE
#include "acl/acl.h"
#include "simtest.h"

#include <stdbool.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_bool stop;

static void *copier(void *arg)
{
    (void)arg;
    aclrtStream s;
    void *a, *b;
    aclrtSetDevice(1);
    aclrtCreateStream(&s);
    aclrtMalloc(&a, 4096, ACL_MEM_MALLOC_HUGE_FIRST);
    aclrtMalloc(&b, 4096, ACL_MEM_MALLOC_HUGE_FIRST);
    while (!atomic_load(&stop)) {
        for (int i = 0; i < 64; i++)
            aclrtMemcpyAsync(b, 4096, a, 4096, ACL_MEMCPY_DEVICE_TO_DEVICE, s);
        aclrtSynchronizeStream(s);
    }
    aclrtFree(a);
    aclrtFree(b);
    aclrtDestroyStream(s);
    return NULL;
}

static int child_work(void)
{
    aclrtStream s;
    char *host;
    void *dev;
    if (aclrtSetDevice(0) != ACL_SUCCESS || aclrtCreateStream(&s) != ACL_SUCCESS)
        return 1;
    if (aclrtMallocHost((void **)&host, 256) != ACL_SUCCESS ||
        aclrtMalloc(&dev, 256, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS)
        return 2;
    memset(host, 0x5a, 256);
    if (aclrtMemcpyAsync(dev, 256, host, 256, ACL_MEMCPY_HOST_TO_DEVICE, s) != ACL_SUCCESS ||
        aclrtSynchronizeStream(s) != ACL_SUCCESS)
        return 3;
    memset(host, 0, 256);
    if (aclrtMemcpyAsync(host, 256, dev, 256, ACL_MEMCPY_DEVICE_TO_HOST, s) != ACL_SUCCESS)
        return 4;
    if (aclrtSynchronizeStream(s) != ACL_SUCCESS)
        return 5;
    for (int i = 0; i < 256; i++)
        if ((unsigned char)host[i] != 0x5a)
            return 6;
    return 0;
}

int main(void)
{
    REQUIRE_OK(aclInit(NULL));
    pthread_t t;
    CHECK(pthread_create(&t, NULL, copier, NULL) == 0, "a thread copies continuously");
    int ok = 0;
    for (int i = 0; i < 20; i++) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(child_work());
        int status = -1;
        waitpid(pid, &status, 0);
        ok += WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    CHECK_EQ(ok, 20, "20 children forked mid-copy used the runtime and exited cleanly");
    atomic_store(&stop, true);
    pthread_join(t, NULL);
    int rc = child_work();
    CHECK(rc == 0, "the parent's runtime still works after the forks (step %d)", rc);
    return st_done();
}
