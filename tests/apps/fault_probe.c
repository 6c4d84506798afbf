/*
 * fault_probe.c - a scripted sequence of copies, for fault-injection tests.
 *
 * usage: fault_probe TOKEN...
 *
 *   KIND:COUNT[:max=M][:stream=default]
 *                         one aclrtMemcpyAsync; KIND is h2d, d2h or d2d, COUNT
 *                         bytes with an optional K or M suffix (1024-based);
 *                         destMax is M (default: the buffer size, as large as
 *                         the largest COUNT or M), on the program's stream or
 *                         on the default stream (NULL);
 *                         prints "call <i> <KIND> <COUNT> ret <code>"
 *   hccl:KIND:COUNT[:rank=R][:link=L]
 *                         one HcclMemcpyAsync (KIND as above; rank default 1,
 *                         link default 1 = HCCS); prints
 *                         "call <i> hccl:<KIND> <COUNT> ret <code>"
 *   set:SPEC              npushim_faults_set(SPEC) ("set:" alone clears the
 *                         rules); prints "set ret 0", or "set ret <r> err
 *                         <npushim_last_error()>" when it fails, or
 *                         "set unavailable" when the shim is not loaded
 *   seed                  prints "seed <npushim_seed()>" (or "seed unavailable")
 *   sync                  aclrtSynchronizeStream; prints "sync ret <code>"
 *
 * <i> counts copies (both APIs) from 1.  The npushim control API is resolved
 * with dlsym(RTLD_DEFAULT) so the program also runs without the shim, and
 * HcclMemcpyAsync (declared only in a C++ header) is called through its
 * exported symbol with the ABI of SPEC section 2.2.  Buffers are device memory
 * and pinned host memory, 64-byte aligned, as large as the largest copy.
 *
 * stdout carries no pointers or timings.  exit status: 0 unless setup failed
 * (1) or a token is malformed (2).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"

struct hccl_stream_layout {
    const void *vptr;
    void *stream_;
    int32_t streamId_;
};

typedef int (*hccl_memcpy_fn)(void *dispatcher, void *dst, uint64_t destMax, const void *src, uint64_t count,
                              int kind, void *stream, uint32_t remoteUserRank, int linkType);
typedef int (*hccl_init_fn)(int type, int32_t device, void **dispatcher);
typedef int (*hccl_destroy_fn)(void *dispatcher);
typedef int (*faults_set_fn)(const char *spec);
typedef const char *(*last_error_fn)(void);
typedef uint64_t (*seed_fn)(void);

struct copy {
    int hccl;
    int kind; /* aclrtMemcpyKind / HcclRtMemcpyKind: the values agree for 1-3 */
    const char *kind_name;
    size_t count;
    size_t dest_max; /* 0: the buffer size */
    int default_stream;
    unsigned rank;
    int link;
};

static int parse_kind(const char *s, size_t n, struct copy *c)
{
    static const struct {
        const char *name;
        int kind;
    } kinds[] = { { "h2d", ACL_MEMCPY_HOST_TO_DEVICE }, { "d2h", ACL_MEMCPY_DEVICE_TO_HOST },
                  { "d2d", ACL_MEMCPY_DEVICE_TO_DEVICE } };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strlen(kinds[i].name) == n && strncmp(s, kinds[i].name, n) == 0) {
            c->kind = kinds[i].kind;
            c->kind_name = kinds[i].name;
            return 0;
        }
    }
    return -1;
}

/* Parses an unsigned number with an optional K/M suffix; *end is set past it. */
static int parse_size(const char *s, size_t *out, const char **end)
{
    char *e = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (e == s || errno != 0 || *s == '-')
        return -1;
    if (*e == 'K') {
        v *= 1024;
        e++;
    } else if (*e == 'M') {
        v *= 1024 * 1024;
        e++;
    }
    *out = (size_t)v;
    *end = e;
    return 0;
}

/* "KIND:COUNT[:max=M][:stream=default]" or "hccl:KIND:COUNT[:rank=R][:link=L]". */
static int parse_copy(const char *tok, struct copy *c)
{
    memset(c, 0, sizeof *c);
    c->rank = 1;
    c->link = 1;
    if (strncmp(tok, "hccl:", 5) == 0) {
        c->hccl = 1;
        tok += 5;
    }
    const char *colon = strchr(tok, ':');
    if (colon == NULL || parse_kind(tok, (size_t)(colon - tok), c) != 0)
        return -1;
    const char *p = NULL;
    if (parse_size(colon + 1, &c->count, &p) != 0)
        return -1;
    while (*p == ':' && !c->hccl) {
        p++;
        if (strncmp(p, "max=", 4) == 0) {
            if (parse_size(p + 4, &c->dest_max, &p) != 0 || c->dest_max == 0)
                return -1;
        } else if (strncmp(p, "stream=default", 14) == 0) {
            c->default_stream = 1;
            p += 14;
        } else {
            return -1;
        }
    }
    while (*p == ':' && c->hccl) {
        p++;
        char *e = NULL;
        if (strncmp(p, "rank=", 5) == 0) {
            c->rank = (unsigned)strtoul(p + 5, &e, 10);
        } else if (strncmp(p, "link=", 5) == 0) {
            c->link = (int)strtol(p + 5, &e, 10);
        } else {
            return -1;
        }
        if (e == p + 5)
            return -1;
        p = e;
    }
    return *p == '\0' ? 0 : -1;
}

static int is_copy_token(const char *tok)
{
    struct copy c;
    return parse_copy(tok, &c) == 0;
}

int main(int argc, char **argv)
{
    size_t max = 4096;
    for (int i = 1; i < argc; i++) {
        struct copy c;
        if (parse_copy(argv[i], &c) == 0) {
            if (c.count > max)
                max = c.count;
            if (c.dest_max > max)
                max = c.dest_max;
        } else if (strncmp(argv[i], "set:", 4) != 0 && strcmp(argv[i], "seed") != 0 &&
                   strcmp(argv[i], "sync") != 0) {
            fprintf(stderr, "fault_probe: bad token '%s'\n", argv[i]);
            return 2;
        }
    }

    aclrtStream stream = NULL;
    void *dev_a = NULL, *dev_b = NULL, *host_a = NULL, *host_b = NULL;
    void *dispatcher = NULL;
    struct hccl_stream_layout hstream = { NULL, NULL, -1 };
    int status = 1;

    hccl_memcpy_fn hccl_memcpy = (hccl_memcpy_fn)dlsym(RTLD_DEFAULT, "HcclMemcpyAsync");
    hccl_init_fn hccl_init = (hccl_init_fn)dlsym(RTLD_DEFAULT, "HcclDispatcherInit");
    hccl_destroy_fn hccl_destroy = (hccl_destroy_fn)dlsym(RTLD_DEFAULT, "HcclDispatcherDestroy");
    faults_set_fn faults_set = (faults_set_fn)dlsym(RTLD_DEFAULT, "npushim_faults_set");
    last_error_fn last_error = (last_error_fn)dlsym(RTLD_DEFAULT, "npushim_last_error");
    seed_fn seed = (seed_fn)dlsym(RTLD_DEFAULT, "npushim_seed");

    if (aclInit(NULL) != ACL_SUCCESS || aclrtSetDevice(0) != ACL_SUCCESS || aclrtCreateStream(&stream) != ACL_SUCCESS ||
        aclrtMalloc(&dev_a, max, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS ||
        aclrtMalloc(&dev_b, max, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS ||
        aclrtMallocHost(&host_a, max) != ACL_SUCCESS || aclrtMallocHost(&host_b, max) != ACL_SUCCESS) {
        fprintf(stderr, "fault_probe: runtime setup failed\n");
        goto out;
    }
    if (hccl_memcpy == NULL || hccl_init == NULL || hccl_init(0 /* DISPATCHER_NORMAL */, 0, &dispatcher) != 0) {
        fprintf(stderr, "fault_probe: HCCL dispatcher setup failed\n");
        goto out;
    }
    hstream.stream_ = stream;
    memset(host_a, 0x3c, max);

    int index = 0;
    for (int i = 1; i < argc; i++) {
        const char *tok = argv[i];
        if (is_copy_token(tok)) {
            struct copy c;
            parse_copy(tok, &c);
            void *dst = c.kind == ACL_MEMCPY_DEVICE_TO_HOST ? host_b : dev_b;
            const void *src = c.kind == ACL_MEMCPY_HOST_TO_DEVICE ? host_a : dev_a;
            int ret;
            if (c.hccl)
                ret = hccl_memcpy(dispatcher, dst, max, src, c.count, c.kind, &hstream, c.rank, c.link);
            else
                ret = (int)aclrtMemcpyAsync(dst, c.dest_max != 0 ? c.dest_max : max, src, c.count,
                                            (aclrtMemcpyKind)c.kind, c.default_stream ? NULL : stream);
            printf("call %d %s%s %zu ret %d\n", ++index, c.hccl ? "hccl:" : "", c.kind_name, c.count, ret);
        } else if (strncmp(tok, "set:", 4) == 0) {
            if (faults_set == NULL) {
                printf("set unavailable\n");
                continue;
            }
            int r = faults_set(tok + 4);
            if (r == 0)
                printf("set ret 0\n");
            else
                printf("set ret %d err %s\n", r, last_error != NULL ? last_error() : "?");
        } else if (strcmp(tok, "seed") == 0) {
            if (seed == NULL)
                printf("seed unavailable\n");
            else
                printf("seed %" PRIu64 "\n", seed());
        } else if (strcmp(tok, "sync") == 0) {
            printf("sync ret %d\n", (int)aclrtSynchronizeStream(stream));
        }
        fflush(stdout);
    }
    status = 0;

out:
    fflush(stdout);
    if (stream != NULL)
        aclrtSynchronizeStream(stream);
    aclrtSynchronizeStream(NULL);
    if (dispatcher != NULL && hccl_destroy != NULL)
        hccl_destroy(dispatcher);
    if (dev_a != NULL)
        aclrtFree(dev_a);
    if (dev_b != NULL)
        aclrtFree(dev_b);
    if (host_a != NULL)
        aclrtFreeHost(host_a);
    if (host_b != NULL)
        aclrtFreeHost(host_b);
    if (stream != NULL)
        aclrtDestroyStream(stream);
    aclrtResetDevice(0);
    aclFinalize();
    return status;
}
