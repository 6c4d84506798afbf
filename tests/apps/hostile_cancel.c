/*
 * hostile_cancel.c - a thread cancelled (pthread_cancel) inside aclrtMemcpyAsync.
 *
 * The worker announces that it is about to copy, calls aclrtMemcpyAsync, then
 * waits until the cancel has been sent and reaches pthread_testcancel().  The main
 * thread cancels it as soon as it has announced itself, joins it and prints how it
 * ended.  Where the worker is cancelled depends on what blocks inside the call
 * (the runtime's wait for a pageable copy, or anything an interposer adds), but it
 * always ends cancelled, and the process goes on normally.
 *
 * usage: hostile_cancel pinned|pageable
 *   pinned:   a 4 KiB copy from aclrtMallocHost memory (asynchronous)
 *   pageable: first a 1 MiB pinned copy, then a 4 KiB copy from malloc'd memory,
 *             which waits for the stream to drain (with NPUSIM_GBPS small, long
 *             enough to be cancelled in that wait)
 * stdout: "worker cancelled" or "worker finished", then "main done".
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"

static aclrtStream g_stream;
static void *g_dev;
static void *g_pinned;
static void *g_pageable;
static int g_announced;
static int g_cancel_sent;

#define BIG (1u << 20)
#define SMALL 4096u

static void *worker(void *arg)
{
    int pageable = *(int *)arg;
    if (pageable)
        aclrtMemcpyAsync(g_dev, BIG, g_pinned, BIG, ACL_MEMCPY_HOST_TO_DEVICE, g_stream);
    __atomic_store_n(&g_announced, 1, __ATOMIC_SEQ_CST);
    aclrtMemcpyAsync(g_dev, SMALL, pageable ? g_pageable : g_pinned, SMALL, ACL_MEMCPY_HOST_TO_DEVICE, g_stream);
    while (!__atomic_load_n(&g_cancel_sent, __ATOMIC_SEQ_CST))
        sched_yield();
    pthread_testcancel();
    return NULL;
}

int main(int argc, char **argv)
{
    static int pageable;
    pageable = argc > 1 && strcmp(argv[1], "pageable") == 0;
    if (aclInit(NULL) != ACL_SUCCESS || aclrtSetDevice(0) != ACL_SUCCESS || aclrtCreateStream(&g_stream) != ACL_SUCCESS ||
        aclrtMalloc(&g_dev, BIG, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS ||
        aclrtMallocHost(&g_pinned, BIG) != ACL_SUCCESS || (g_pageable = aligned_alloc(64, SMALL)) == NULL) {
        fprintf(stderr, "hostile_cancel: setup failed\n");
        return 1;
    }
    memset(g_pinned, 1, BIG);
    memset(g_pageable, 2, SMALL);
    pthread_t t;
    if (pthread_create(&t, NULL, worker, &pageable) != 0)
        return 1;
    while (!__atomic_load_n(&g_announced, __ATOMIC_SEQ_CST))
        sched_yield();
    pthread_cancel(t);
    __atomic_store_n(&g_cancel_sent, 1, __ATOMIC_SEQ_CST);
    void *result = NULL;
    pthread_join(t, &result);
    printf("worker %s\n", result == PTHREAD_CANCELED ? "cancelled" : "finished");
    printf("main done\n");
    fflush(stdout);
    /* A thread cancelled inside the runtime's wait may leave the stream's lock held:
     * leave without tearing the runtime down (exit handlers still run). */
    exit(0);
}
