/*
 * hostile_signal.c - aclrtMemcpyAsync called from a SIGALRM handler that
 * interrupts the program's own copies every 50 microseconds.
 *
 * The timer starts before the first copy, so the handler also interrupts whatever
 * an interposer does at its first call.  The handler's copies have count 0 (the
 * runtime returns at once, touching no lock), as a handler must not block.
 *
 * usage: hostile_signal [copies]      (default 20000)
 * stdout: "done"; stderr: one line "hostile_signal: main=N handler=M" with the
 * number of calls each side made.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "acl/acl.h"

static aclrtStream g_stream;
static void *g_dev;
static void *g_host;
static volatile sig_atomic_t g_armed;
/* Counted atomically: SIGALRM goes to any thread that does not block it, the runtime's
 * stream threads included, so two handlers can run at once on two threads. */
static long g_handler_calls;

static void on_alarm(int sig)
{
    (void)sig;
    if (!g_armed)
        return;
    aclrtMemcpyAsync(g_dev, 4096, g_host, 0, ACL_MEMCPY_HOST_TO_DEVICE, g_stream);
    __atomic_fetch_add(&g_handler_calls, 1, __ATOMIC_RELAXED);
}

int main(int argc, char **argv)
{
    long copies = argc > 1 ? atol(argv[1]) : 20000;
    if (aclInit(NULL) != ACL_SUCCESS || aclrtSetDevice(0) != ACL_SUCCESS || aclrtCreateStream(&g_stream) != ACL_SUCCESS ||
        aclrtMalloc(&g_dev, 4096, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS || aclrtMallocHost(&g_host, 4096) != ACL_SUCCESS) {
        fprintf(stderr, "hostile_signal: setup failed\n");
        return 1;
    }
    memset(g_host, 7, 4096);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval every = { { 0, 50 }, { 0, 50 } };
    g_armed = 1;
    setitimer(ITIMER_REAL, &every, NULL);
    long failed = 0;
    for (long i = 0; i < copies; i++) {
        if (aclrtMemcpyAsync(g_dev, 4096, g_host, 4096, ACL_MEMCPY_HOST_TO_DEVICE, g_stream) != ACL_SUCCESS)
            failed++;
        if (i % 256 == 255)
            aclrtSynchronizeStream(g_stream);
    }
    struct itimerval stop = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &stop, NULL);
    g_armed = 0;
    aclrtSynchronizeStream(g_stream);
    fprintf(stderr, "hostile_signal: main=%ld handler=%ld\n", copies,
            __atomic_load_n(&g_handler_calls, __ATOMIC_RELAXED));
    printf(failed == 0 ? "done\n" : "copies failed\n");
    return failed == 0 ? 0 : 1;
}
