// retry_copy: what a training loop that survives runtime copy failures looks like.
//
// Each of the 20 "training steps" copies a batch to the device (H2D), "computes" on the
// device (a D2D copy), copies the result back (D2H), synchronizes, and verifies the bytes.
//
// Two lessons, both visible when run under npushim's fault injection:
//   - every aclrtMemcpyAsync return code is checked, and a failed copy is retried up to
//     3 times with a short backoff;
//   - a copy that *returns success* may still not have happened (a lost copy: npushim's
//     `skip` fault). Only verifying the data catches that; the step is then redone.
//
//   export NPUSHIM_FAULTS='aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->1*return(507053)->off'
//   LD_PRELOAD=libnpushim.so retry_copy
//
// usage: retry_copy [steps]          (default 20)
// stdout: one line per retry or redone step, then a summary:
//   retry_copy: 20 steps, 60 copies, 1 retries, 0 redone steps, all results verified
// exit status: 0 when every step's result was verified, 1 otherwise (including when a
// copy still fails after its retries, or a step still mismatches after its redos).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "acl/acl.h"

namespace {

constexpr size_t kBatch = 64 * 1024;
constexpr int kMaxRetries = 3;
constexpr int kMaxRedos = 3;

struct Stats {
    long copies = 0;   // copy calls that returned success
    long retries = 0;  // copy calls repeated after a failure
    long redos = 0;    // steps redone after a verification failure
};

const char *kind_name(aclrtMemcpyKind kind) {
    switch (kind) {
    case ACL_MEMCPY_HOST_TO_DEVICE: return "H2D";
    case ACL_MEMCPY_DEVICE_TO_HOST: return "D2H";
    case ACL_MEMCPY_DEVICE_TO_DEVICE: return "D2D";
    default: return "copy";
    }
}

// One copy, retried up to kMaxRetries times after a failure. Returns the last code.
aclError copy_with_retry(int step, void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                         aclrtStream stream, Stats &stats) {
    aclError ret = ACL_SUCCESS;
    for (int attempt = 0; attempt <= kMaxRetries; attempt++) {
        if (attempt > 0) {
            stats.retries++;
            std::printf("step %d: %s copy failed with error %d, retry %d/%d\n", step, kind_name(kind), (int)ret,
                        attempt, kMaxRetries);
            std::this_thread::sleep_for(std::chrono::milliseconds(1 << (attempt - 1)));
        }
        ret = aclrtMemcpyAsync(dst, destMax, src, count, kind, stream);
        if (ret == ACL_SUCCESS) {
            stats.copies++;
            return ret;
        }
    }
    std::printf("step %d: %s copy still failing with error %d after %d retries, giving up\n", step, kind_name(kind),
                (int)ret, kMaxRetries);
    return ret;
}

void fill(unsigned char *p, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u ^ 0x9e3779b9u;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = static_cast<unsigned char>(x >> 24);
    }
}

struct Buffers {
    aclrtStream stream = nullptr;
    unsigned char *batch = nullptr;   // pinned host
    unsigned char *result = nullptr;  // pinned host
    void *dev_in = nullptr;
    void *dev_out = nullptr;

    bool init() {
        return aclrtCreateStream(&stream) == ACL_SUCCESS &&
               aclrtMallocHost(reinterpret_cast<void **>(&batch), kBatch) == ACL_SUCCESS &&
               aclrtMallocHost(reinterpret_cast<void **>(&result), kBatch) == ACL_SUCCESS &&
               aclrtMalloc(&dev_in, kBatch, ACL_MEM_MALLOC_HUGE_FIRST) == ACL_SUCCESS &&
               aclrtMalloc(&dev_out, kBatch, ACL_MEM_MALLOC_HUGE_FIRST) == ACL_SUCCESS;
    }

    ~Buffers() {
        if (stream != nullptr) aclrtSynchronizeStream(stream);
        if (dev_in != nullptr) aclrtFree(dev_in);
        if (dev_out != nullptr) aclrtFree(dev_out);
        if (batch != nullptr) aclrtFreeHost(batch);
        if (result != nullptr) aclrtFreeHost(result);
        if (stream != nullptr) aclrtDestroyStream(stream);
    }
};

enum class StepResult { Verified, Mismatch, Failed };

StepResult run_step(int step, Buffers &b, Stats &stats) {
    fill(b.batch, kBatch, static_cast<uint32_t>(step));
    std::memset(b.result, 0, kBatch);
    if (copy_with_retry(step, b.dev_in, kBatch, b.batch, kBatch, ACL_MEMCPY_HOST_TO_DEVICE, b.stream, stats) !=
            ACL_SUCCESS ||
        copy_with_retry(step, b.dev_out, kBatch, b.dev_in, kBatch, ACL_MEMCPY_DEVICE_TO_DEVICE, b.stream, stats) !=
            ACL_SUCCESS ||
        copy_with_retry(step, b.result, kBatch, b.dev_out, kBatch, ACL_MEMCPY_DEVICE_TO_HOST, b.stream, stats) !=
            ACL_SUCCESS) {
        aclrtSynchronizeStream(b.stream);
        return StepResult::Failed;
    }
    aclError ret = aclrtSynchronizeStream(b.stream);
    if (ret != ACL_SUCCESS) {
        std::printf("step %d: aclrtSynchronizeStream failed with error %d\n", step, (int)ret);
        return StepResult::Failed;
    }
    return std::memcmp(b.batch, b.result, kBatch) == 0 ? StepResult::Verified : StepResult::Mismatch;
}

}  // namespace

int main(int argc, char **argv) {
    int steps = 20;
    if (argc > 1) {
        steps = std::atoi(argv[1]);
        if (steps < 1) {
            std::fprintf(stderr, "usage: %s [steps >= 1]\n", argv[0]);
            return 2;
        }
    }
    if (aclInit(nullptr) != ACL_SUCCESS || aclrtSetDevice(0) != ACL_SUCCESS) {
        std::fprintf(stderr, "retry_copy: runtime setup failed\n");
        return 1;
    }
    Stats stats;
    int verified = 0;
    {
        Buffers b;
        if (!b.init()) {
            std::fprintf(stderr, "retry_copy: buffer setup failed\n");
            return 1;
        }
        for (int step = 1; step <= steps; step++) {
            StepResult r = StepResult::Mismatch;
            for (int redo = 0; redo <= kMaxRedos; redo++) {
                if (redo > 0) stats.redos++;
                r = run_step(step, b, stats);
                if (r != StepResult::Mismatch) break;
                if (redo < kMaxRedos)
                    std::printf("step %d: result mismatch after a successful copy (lost copy?) - redoing step\n",
                                step);
                else
                    std::printf("step %d: result still wrong after %d redos, giving up\n", step, kMaxRedos);
            }
            if (r != StepResult::Verified) break;
            verified++;
        }
    }
    aclrtResetDevice(0);
    aclFinalize();

    if (verified == steps) {
        std::printf("retry_copy: %d steps, %ld copies, %ld retries, %ld redone steps, all results verified\n", steps,
                    stats.copies, stats.retries, stats.redos);
        return 0;
    }
    std::printf("retry_copy: FAILED at step %d of %d (%ld copies, %ld retries, %ld redone steps)\n", verified + 1,
                steps, stats.copies, stats.retries, stats.redos);
    return 1;
}
