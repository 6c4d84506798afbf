/*
 * exit_destructor.c - copies made by a thread that is exiting.
 *
 * A worker thread makes 5 copies, then exits. Two pthread keys hold
 * destructors that make one more copy each while the thread is being torn
 * down. With --late, the first destructor sets its key again once, so it runs
 * (and copies) once more in a later round of the teardown, when the shim may
 * have let go of the thread's trace buffer: such a copy must still be
 * forwarded and, if it cannot be traced, counted.
 * Prints "copies N" with the number of successful copies.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "acl/acl.h"

static void *src, *dst;
static aclrtStream stream;
static int ok_copies;
static int late;
static pthread_key_t keys[2];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void copy_once(void)
{
    aclError ret = aclrtMemcpyAsync(dst, 4096, src, 4096, ACL_MEMCPY_HOST_TO_DEVICE, stream);
    pthread_mutex_lock(&lock);
    ok_copies += (ret == ACL_SUCCESS);
    pthread_mutex_unlock(&lock);
}

static void on_exit_copy(void *arg)
{
    copy_once();
    if (late && arg == (void *)1)
        pthread_setspecific(keys[0], (void *)2);
}

static void *worker(void *arg)
{
    (void)arg;
    if (aclrtSetDevice(0) != ACL_SUCCESS)
        return NULL;
    pthread_setspecific(keys[0], (void *)1);
    pthread_setspecific(keys[1], (void *)1);
    for (int i = 0; i < 5; i++)
        copy_once();
    return NULL;
}

int main(int argc, char **argv)
{
    late = argc > 1 && strcmp(argv[1], "--late") == 0;
    if (aclInit(NULL) != ACL_SUCCESS || aclrtSetDevice(0) != ACL_SUCCESS || aclrtCreateStream(&stream) != ACL_SUCCESS ||
        aclrtMallocHost(&src, 4096) != ACL_SUCCESS || aclrtMalloc(&dst, 4096, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS) {
        fprintf(stderr, "exit_destructor: runtime setup failed\n");
        return 1;
    }
    pthread_key_create(&keys[0], on_exit_copy);
    pthread_key_create(&keys[1], on_exit_copy);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    aclrtSynchronizeStream(stream);
    aclrtFree(dst);
    aclrtFreeHost(src);
    aclrtDestroyStream(stream);
    aclrtResetDevice(0);
    aclFinalize();
    printf("copies %d\n", ok_copies);
    return 0;
}
