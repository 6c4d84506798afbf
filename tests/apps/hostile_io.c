/*
 * hostile_io.c - a program that is unkind to the descriptors, signals and limits an
 * interposer shares with it, for the "never hurt the host" tests.
 *
 * usage: hostile_io MODE [ARGS]
 *
 *   calls N [bad]      N host-to-device copies; with "bad", the first one breaks the
 *                      size rule (count > destMax), which the shim reports on stderr.
 *                      prints "calls N done".
 *   reuse N M FILE     N copies, then closes every descriptor above 2
 *                      (close_range(3, ~0U, 0)), opens FILE (O_CREAT|O_TRUNC) and
 *                      duplicates it onto the next 16 free numbers, so whatever number
 *                      the program had open before is now FILE; then M more copies,
 *                      each followed by one line "own line <i>" written to FILE, which
 *                      stays open until exit. prints "reuse N M done".
 *   vm                 sets up like "calls" and prints "VmSize <kB>" (from
 *                      /proc/self/status) where the first copy would be, then exits.
 *   writer-mask        one copy, then looks for a thread named "npushim-writer" and
 *                      prints "writer SigBlk <hex>" (its blocked-signal mask from
 *                      /proc), or "writer none".
 *
 * stdout carries no pointers or timings. exit status 0, or 1 if setup failed, 2 on a
 * usage error, 3 if a write to FILE failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "acl/acl.h"

#define BUF 4096

static aclrtStream stream;
static void *dev;
static void *host;

static int setup(void)
{
    if (aclInit(NULL) != ACL_SUCCESS || aclrtSetDevice(0) != ACL_SUCCESS || aclrtCreateStream(&stream) != ACL_SUCCESS ||
        aclrtMalloc(&dev, BUF, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS || aclrtMallocHost(&host, BUF) != ACL_SUCCESS) {
        fprintf(stderr, "hostile_io: setup failed\n");
        return -1;
    }
    return 0;
}

static void copy(size_t count, size_t dest_max)
{
    /* The return code is the runtime's business; these tests look at the process. */
    (void)aclrtMemcpyAsync(dev, dest_max, host, count, ACL_MEMCPY_HOST_TO_DEVICE, stream);
}

static void teardown(void)
{
    aclrtSynchronizeStream(stream);
    aclrtFree(dev);
    aclrtFreeHost(host);
    aclrtDestroyStream(stream);
    aclrtResetDevice(0);
    aclFinalize();
}

/* The value of "Key:" in a /proc status file, or -1. */
static long status_value(const char *path, const char *key, char *text, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) == 0) {
            char *p = line + n;
            while (*p == ' ' || *p == '\t')
                p++;
            p[strcspn(p, " \n")] = 0;
            if (text)
                snprintf(text, size, "%s", p);
            v = strtol(p, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static int writer_mask(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (!fgets(comm, sizeof comm, f))
            comm[0] = 0;
        fclose(f);
        comm[strcspn(comm, "\n")] = 0;
        if (strcmp(comm, "npushim-writer") == 0) {
            char mask[64] = "";
            snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
            status_value(path, "SigBlk:", mask, sizeof mask);
            printf("writer SigBlk %s\n", mask);
            closedir(d);
            return 0;
        }
    }
    closedir(d);
    printf("writer none\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: hostile_io calls N [bad] | reuse N M FILE | vm | writer-mask\n");
        return 2;
    }
    const char *mode = argv[1];
    if (setup() != 0)
        return 1;
    int status = 0;
    if (strcmp(mode, "calls") == 0 && argc >= 3) {
        long n = atol(argv[2]);
        int bad = argc >= 4 && strcmp(argv[3], "bad") == 0;
        for (long i = 0; i < n; i++)
            copy(bad && i == 0 ? BUF : 64, bad && i == 0 ? 64 : BUF);
        printf("calls %ld done\n", n);
    } else if (strcmp(mode, "reuse") == 0 && argc >= 5) {
        long n = atol(argv[2]), m = atol(argv[3]);
        for (long i = 0; i < n; i++)
            copy(64, BUF);
        syscall(SYS_close_range, 3U, ~0U, 0U);
        int fd = open(argv[4], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return 3;
        for (int i = 0; i < 16; i++)
            fcntl(fd, F_DUPFD_CLOEXEC, 3);
        for (long i = 0; i < m; i++) {
            copy(64, BUF);
            char line[64];
            int len = snprintf(line, sizeof line, "own line %ld\n", i);
            if (write(fd, line, (size_t)len) != len)
                status = 3;
        }
        printf("reuse %ld %ld done\n", n, m);
        /* FILE stays open: a log file kept until exit. */
    } else if (strcmp(mode, "vm") == 0) {
        printf("VmSize %ld\n", status_value("/proc/self/status", "VmSize:", NULL, 0));
    } else if (strcmp(mode, "writer-mask") == 0) {
        copy(64, BUF);
        status = writer_mask();
    } else {
        fprintf(stderr, "hostile_io: unknown mode %s\n", mode);
        return 2;
    }
    fflush(stdout);
    teardown();
    return status;
}
