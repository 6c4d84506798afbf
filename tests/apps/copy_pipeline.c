/*
 * copy_pipeline.c - host <-> device copy pipeline in plain AscendCL.
 *
 * Written the way AscendCL samples are: aclInit, one device and context,
 * several streams; on every stream H2D -> D2D -> D2H round trips with pinned
 * (aclrtMallocHost) and pageable (posix_memalign) host buffers of several
 * sizes, all queued before one synchronize per stream.  Every byte is
 * verified.  stdout carries a deterministic summary only.
 *
 * usage: copy_pipeline [iterations]      (default 2)
 * exit status: 0 when every copy succeeded and verified, 1 otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"

#define STREAMS 4
#define SIZES 3
#define HOST_KINDS 2 /* 0: pinned, 1: pageable */
#define COPIES_PER_TRIP 3

static const size_t kSizes[SIZES] = { 4096, 256 * 1024, 1024 * 1024 + 192 };

struct trip {
    int pinned;
    size_t size;
    unsigned char *host_src;
    unsigned char *host_dst;
    void *dev_a;
    void *dev_b;
};

#define ACL_CHECK(call)                                                                               \
    do {                                                                                              \
        aclError ret_ = (call);                                                                       \
        if (ret_ != ACL_SUCCESS) {                                                                    \
            fprintf(stderr, "copy_pipeline: %s failed with error %d (%s:%d)\n", #call, (int)ret_,     \
                    __FILE__, __LINE__);                                                              \
            goto fail;                                                                                \
        }                                                                                             \
    } while (0)

static void fill(unsigned char *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u ^ 0x9e3779b9u;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = (unsigned char)(x >> 24);
    }
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int alloc_host(struct trip *t)
{
    if (t->pinned) {
        if (aclrtMallocHost((void **)&t->host_src, t->size) != ACL_SUCCESS ||
            aclrtMallocHost((void **)&t->host_dst, t->size) != ACL_SUCCESS)
            return -1;
    } else {
        if (posix_memalign((void **)&t->host_src, 64, t->size) != 0 ||
            posix_memalign((void **)&t->host_dst, 64, t->size) != 0)
            return -1;
    }
    return 0;
}

static void free_host(struct trip *t)
{
    if (t->pinned) {
        if (t->host_src != NULL)
            aclrtFreeHost(t->host_src);
        if (t->host_dst != NULL)
            aclrtFreeHost(t->host_dst);
    } else {
        free(t->host_src);
        free(t->host_dst);
    }
}

int main(int argc, char **argv)
{
    int iterations = 2;
    if (argc > 1) {
        iterations = atoi(argv[1]);
        if (iterations < 1) {
            fprintf(stderr, "usage: %s [iterations >= 1]\n", argv[0]);
            return 1;
        }
    }

    const int32_t deviceId = 0;
    aclrtContext context = NULL;
    aclrtStream streams[STREAMS] = { NULL };
    struct trip trips[STREAMS][SIZES][HOST_KINDS];
    memset(trips, 0, sizeof trips);
    int status = 1;
    int device_set = 0, initialized = 0;
    long copies = 0;
    unsigned long long bytes = 0;
    long mismatched = 0;
    uint64_t checksum = 0xcbf29ce484222325ull;

    ACL_CHECK(aclInit(NULL));
    initialized = 1;
    ACL_CHECK(aclrtSetDevice(deviceId));
    device_set = 1;
    ACL_CHECK(aclrtCreateContext(&context, deviceId));
    for (int s = 0; s < STREAMS; s++)
        ACL_CHECK(aclrtCreateStream(&streams[s]));

    for (int s = 0; s < STREAMS; s++) {
        for (int z = 0; z < SIZES; z++) {
            for (int k = 0; k < HOST_KINDS; k++) {
                struct trip *t = &trips[s][z][k];
                t->pinned = k == 0;
                t->size = kSizes[z];
                if (alloc_host(t) != 0) {
                    fprintf(stderr, "copy_pipeline: host allocation of %zu bytes failed\n", t->size);
                    goto fail;
                }
                ACL_CHECK(aclrtMalloc(&t->dev_a, t->size, ACL_MEM_MALLOC_HUGE_FIRST));
                ACL_CHECK(aclrtMalloc(&t->dev_b, t->size, ACL_MEM_MALLOC_HUGE_FIRST));
            }
        }
    }

    for (int it = 0; it < iterations; it++) {
        for (int s = 0; s < STREAMS; s++) {
            for (int z = 0; z < SIZES; z++) {
                for (int k = 0; k < HOST_KINDS; k++) {
                    struct trip *t = &trips[s][z][k];
                    fill(t->host_src, t->size, (uint32_t)(((it * STREAMS + s) * SIZES + z) * HOST_KINDS + k));
                    memset(t->host_dst, 0, t->size);
                    ACL_CHECK(aclrtMemcpyAsync(t->dev_a, t->size, t->host_src, t->size, ACL_MEMCPY_HOST_TO_DEVICE,
                                               streams[s]));
                    ACL_CHECK(aclrtMemcpyAsync(t->dev_b, t->size, t->dev_a, t->size, ACL_MEMCPY_DEVICE_TO_DEVICE,
                                               streams[s]));
                    ACL_CHECK(aclrtMemcpyAsync(t->host_dst, t->size, t->dev_b, t->size, ACL_MEMCPY_DEVICE_TO_HOST,
                                               streams[s]));
                    copies += COPIES_PER_TRIP;
                    bytes += (unsigned long long)t->size * COPIES_PER_TRIP;
                }
            }
        }
        for (int s = 0; s < STREAMS; s++)
            ACL_CHECK(aclrtSynchronizeStream(streams[s]));
        for (int s = 0; s < STREAMS; s++) {
            for (int z = 0; z < SIZES; z++) {
                for (int k = 0; k < HOST_KINDS; k++) {
                    struct trip *t = &trips[s][z][k];
                    if (memcmp(t->host_src, t->host_dst, t->size) != 0) {
                        size_t i = 0;
                        while (i < t->size && t->host_src[i] == t->host_dst[i])
                            i++;
                        fprintf(stderr,
                                "copy_pipeline: mismatch: iteration %d stream %d size %zu %s host memory, "
                                "first differing byte at offset %zu\n",
                                it, s, t->size, t->pinned ? "pinned" : "pageable", i);
                        mismatched++;
                    }
                    checksum = fnv1a(checksum, t->host_dst, t->size);
                }
            }
        }
    }

    printf("copy_pipeline: %d iterations, %d streams, %d buffer sizes, pinned and pageable host memory\n", iterations,
           STREAMS, SIZES);
    printf("copy_pipeline: %ld copies, %llu bytes, checksum 0x%016llx\n", copies, bytes,
           (unsigned long long)checksum);
    if (mismatched == 0) {
        printf("OK\n");
        status = 0;
    } else {
        printf("FAILED: %ld mismatched round trips\n", mismatched);
    }

fail:
    for (int s = 0; s < STREAMS; s++) {
        for (int z = 0; z < SIZES; z++) {
            for (int k = 0; k < HOST_KINDS; k++) {
                struct trip *t = &trips[s][z][k];
                if (t->dev_a != NULL)
                    aclrtFree(t->dev_a);
                if (t->dev_b != NULL)
                    aclrtFree(t->dev_b);
                free_host(t);
            }
        }
    }
    for (int s = 0; s < STREAMS; s++)
        if (streams[s] != NULL)
            aclrtDestroyStream(streams[s]);
    if (context != NULL)
        aclrtDestroyContext(context);
    if (device_set)
        aclrtResetDevice(deviceId);
    if (initialized)
        aclFinalize();
    return status;
}
