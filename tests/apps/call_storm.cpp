// call_storm: many threads issuing aclrtMemcpyAsync and HcclMemcpyAsync as fast as they
// can, with optional fork()s, calls from atexit handlers and static destructors, and a
// "pause after N calls" mode for crash tests. Used to check that a traced run records
// exactly what was called, whatever the process does.
//
//   call_storm [--threads N] [--calls N] [--api acl|hccl|both] [--forks N]
//              [--child-calls N] [--atexit N] [--pause] [--background]
//
// --background leaves a detached thread calling in a loop while main returns, so calls
// keep arriving while the process exits.
//
// Prints one line per thread ("thread T tid X acl A hccl H") and, per fork, one line
// ("child PID calls C status S"). Exit status 0 only if every call returned success.
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "acl/acl.h"
#include "hccl/dispatcher.h"

namespace {

constexpr size_t kBytes = 256;

struct Options {
    int threads = 1;
    long calls = 1000;
    bool acl = true;
    bool hccl = true;
    int forks = 0;
    long child_calls = 100;
    long atexit_calls = 0;
    bool pause = false;
    bool background = false;
};

Options opt;
std::atomic<bool> stop_workers{false};
std::atomic<long> failures{0};

void fail(const char *what, int code) {
    std::fprintf(stderr, "call_storm: %s returned %d\n", what, code);
    failures.fetch_add(1);
}

// One device's worth of state: a stream, two device buffers, a dispatcher.
struct Lane {
    int device = 0;
    aclrtStream stream = nullptr;
    void *a = nullptr;
    void *b = nullptr;
    HcclDispatcher dispatcher = nullptr;
    hccl::Stream *hstream = nullptr;

    explicit Lane(int dev) : device(dev) {
        int rc = aclrtSetDevice(dev);
        if (rc != ACL_SUCCESS) fail("aclrtSetDevice", rc);
        if ((rc = aclrtCreateStream(&stream)) != ACL_SUCCESS) fail("aclrtCreateStream", rc);
        if ((rc = aclrtMalloc(&a, kBytes, ACL_MEM_MALLOC_HUGE_FIRST)) != ACL_SUCCESS) fail("aclrtMalloc", rc);
        if ((rc = aclrtMalloc(&b, kBytes, ACL_MEM_MALLOC_HUGE_FIRST)) != ACL_SUCCESS) fail("aclrtMalloc", rc);
        if ((rc = HcclDispatcherInit(DISPATCHER_NORMAL, dev, &dispatcher)) != HCCL_SUCCESS) fail("HcclDispatcherInit", rc);
        hstream = new hccl::Stream(stream);
    }

    ~Lane() {
        aclrtSynchronizeStream(stream);
        delete hstream;
        HcclDispatcherDestroy(dispatcher);
        aclrtFree(a);
        aclrtFree(b);
        aclrtDestroyStream(stream);
    }

    void acl_call() {
        int rc = aclrtMemcpyAsync(b, kBytes, a, kBytes, ACL_MEMCPY_DEVICE_TO_DEVICE, stream);
        if (rc != ACL_SUCCESS) fail("aclrtMemcpyAsync", rc);
    }

    void hccl_call() {
        HcclResult rc = HcclMemcpyAsync(dispatcher, a, kBytes, b, kBytes,
                                        HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_DEVICE_TO_DEVICE,
                                        *hstream, 1, hccl::LinkType::LINK_HCCS);
        if (rc != HCCL_SUCCESS) fail("HcclMemcpyAsync", rc);
    }

    // Issues `n` calls of each selected API; synchronizes now and then so the simulated
    // stream queue stays short. Returns {acl, hccl} counts.
    std::pair<long, long> run(long n) {
        long acl = 0, hccl = 0;
        for (long i = 0; i < n; i++) {
            if (opt.acl) { acl_call(); acl++; }
            if (opt.hccl) { hccl_call(); hccl++; }
            if (i % 512 == 511) aclrtSynchronizeStream(stream);
        }
        aclrtSynchronizeStream(stream);
        return {acl, hccl};
    }
};

long tid() { return static_cast<long>(syscall(SYS_gettid)); }

void at_exit_calls() {
    Lane lane(0);
    lane.run(opt.atexit_calls);
}

// A static object whose destructor calls the API (runs after main, like real programs'
// global teardown code).
struct StaticTeardown {
    ~StaticTeardown() {
        if (opt.atexit_calls > 0) {
            Lane lane(0);
            lane.run(1);
        }
    }
} static_teardown;

long parse(const char *s) {
    char *end = nullptr;
    errno = 0;
    long v = std::strtol(s, &end, 10);
    if (errno || *end || v < 0) {
        std::fprintf(stderr, "call_storm: bad number '%s'\n", s);
        std::exit(2);
    }
    return v;
}

}  // namespace

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> const char * {
            if (i + 1 >= argc) { std::fprintf(stderr, "call_storm: %s needs a value\n", a.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (a == "--threads") opt.threads = static_cast<int>(parse(next()));
        else if (a == "--calls") opt.calls = parse(next());
        else if (a == "--forks") opt.forks = static_cast<int>(parse(next()));
        else if (a == "--child-calls") opt.child_calls = parse(next());
        else if (a == "--atexit") opt.atexit_calls = parse(next());
        else if (a == "--pause") opt.pause = true;
        else if (a == "--background") opt.background = true;
        else if (a == "--api") {
            std::string v = next();
            opt.acl = v == "acl" || v == "both";
            opt.hccl = v == "hccl" || v == "both";
            if (!opt.acl && !opt.hccl) { std::fprintf(stderr, "call_storm: --api acl|hccl|both\n"); return 2; }
        } else {
            std::fprintf(stderr, "call_storm: unknown option %s\n", a.c_str());
            return 2;
        }
    }
    if (aclInit(nullptr) != ACL_SUCCESS) { std::fprintf(stderr, "call_storm: aclInit failed\n"); return 1; }
    uint32_t devices = 1;
    aclrtGetDeviceCount(&devices);
    if (opt.atexit_calls > 0) std::atexit(at_exit_calls);

    if (opt.background) {
        std::thread([devices] {
            Lane lane(static_cast<int>(1 % devices));
            for (;;) lane.run(16);
        }).detach();
    }

    if (opt.pause) {
        Lane lane(0);
        auto counts = lane.run(opt.calls);
        std::printf("ready acl %ld hccl %ld\n", counts.first, counts.second);
        std::fflush(stdout);
        for (;;) pause();
    }

    if (opt.forks > 0) {
        // Two threads keep calling while the main thread forks.
        std::vector<std::thread> workers;
        std::vector<std::pair<long, long>> counts(2);
        std::vector<long> tids(2);
        for (int t = 0; t < 2; t++) {
            workers.emplace_back([t, devices, &counts, &tids] {
                Lane lane(static_cast<int>(t % devices));
                tids[t] = tid();
                while (!stop_workers.load()) {
                    auto c = lane.run(64);
                    counts[t].first += c.first;
                    counts[t].second += c.second;
                }
            });
        }
        for (int f = 0; f < opt.forks; f++) {
            std::fflush(stdout);
            pid_t pid = fork();
            if (pid < 0) { std::perror("fork"); return 1; }
            if (pid == 0) {
                // The child: only this thread exists. Fresh lane, some calls, normal exit.
                Lane lane(0);
                lane.run(opt.child_calls);
                std::exit(failures.load() ? 1 : 0);
            }
            int status = 0;
            waitpid(pid, &status, 0);
            std::printf("child %d calls %ld status %d\n", pid, opt.child_calls,
                        WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
        stop_workers.store(true);
        for (auto &w : workers) w.join();
        for (int t = 0; t < 2; t++)
            std::printf("thread %d tid %ld acl %ld hccl %ld\n", t, tids[t], counts[t].first, counts[t].second);
    } else {
        std::vector<std::thread> workers;
        std::vector<std::pair<long, long>> counts(opt.threads);
        std::vector<long> tids(opt.threads);
        for (int t = 0; t < opt.threads; t++) {
            workers.emplace_back([t, devices, &counts, &tids] {
                Lane lane(static_cast<int>(t % devices));
                tids[t] = tid();
                counts[t] = lane.run(opt.calls);
            });
        }
        for (auto &w : workers) w.join();
        for (int t = 0; t < opt.threads; t++)
            std::printf("thread %d tid %ld acl %ld hccl %ld\n", t, tids[t], counts[t].first, counts[t].second);
    }
    std::fflush(stdout);
    return failures.load() ? 1 : 0;
}
