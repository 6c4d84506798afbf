/*
 * ring_allgather.cpp - a ring all-gather driven through HcclMemcpyAsync.
 *
 * One thread per simulated device (up to 8), each with its own aclrtStream
 * wrapped in an hccl::Stream and its own HCCL dispatcher, the way HCCL's ring
 * algorithm moves data inside a server: in step s every rank pushes the block
 * it received in step s-1 (its own block in step 0) into the next rank's
 * buffer over HCCS, then synchronizes its stream and waits at a barrier.
 * After ranks-1 steps every rank holds every block; each rank copies its
 * buffer back to the host and verifies it.  stdout is deterministic.
 *
 * With --d2d each step is HcclD2DMemcpyAsync on two hccl::DeviceMem views
 * (the destination view runs to the end of the peer's buffer, the source view
 * is one block), the form HCCL's own collectives use.
 *
 * usage: ring_allgather [--d2d] [bytes per rank]   (default 262144)
 * exit status: 0 when every rank gathered the right data, 1 otherwise.
 */
#include <pthread.h>

#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "acl/acl.h"
#include "hccl/dispatcher.h"

namespace {

constexpr int kMaxRanks = 8;

struct Shared {
    int ranks;
    bool d2d;
    size_t blockBytes;
    pthread_barrier_t barrier;
    void *recv[kMaxRanks]; // each rank's gather buffer (device memory)
    std::atomic<int> failed{0};
};

struct RankResult {
    uint64_t checksum = 0;
    int copies = 0;
    int badBlocks = 0;
};

struct RankArg {
    int rank;
    Shared *shared;
    RankResult result;
};

unsigned char Pattern(int owner, size_t i)
{
    return static_cast<unsigned char>((owner * 131 + i * 7 + (i >> 8)) & 0xff);
}

uint64_t Fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

bool AclOk(Shared *sh, int rank, const char *what, aclError ret)
{
    if (ret == ACL_SUCCESS)
        return true;
    fprintf(stderr, "ring_allgather: rank %d: %s failed with error %d\n", rank, what, static_cast<int>(ret));
    sh->failed.store(1);
    return false;
}

bool HcclOk(Shared *sh, int rank, const char *what, HcclResult ret)
{
    if (ret == HCCL_SUCCESS)
        return true;
    fprintf(stderr, "ring_allgather: rank %d: %s failed with HcclResult %d\n", rank, what, static_cast<int>(ret));
    sh->failed.store(1);
    return false;
}

const char *CopyName(const Shared *sh)
{
    return sh->d2d ? "HcclD2DMemcpyAsync" : "HcclMemcpyAsync";
}

void *RankMain(void *p)
{
    auto *arg = static_cast<RankArg *>(p);
    Shared *sh = arg->shared;
    const int rank = arg->rank;
    const int n = sh->ranks;
    const size_t block = sh->blockBytes;
    const size_t total = block * static_cast<size_t>(n);
    aclrtStream stream = nullptr;
    HcclDispatcher dispatcher = nullptr;
    unsigned char *host = nullptr;
    bool ok = AclOk(sh, rank, "aclrtSetDevice", aclrtSetDevice(rank)) &&
              AclOk(sh, rank, "aclrtCreateStream", aclrtCreateStream(&stream)) &&
              AclOk(sh, rank, "aclrtMalloc", aclrtMalloc(&sh->recv[rank], total, ACL_MEM_MALLOC_HUGE_FIRST)) &&
              AclOk(sh, rank, "aclrtMallocHost", aclrtMallocHost(reinterpret_cast<void **>(&host), total)) &&
              HcclOk(sh, rank, "HcclDispatcherInit", HcclDispatcherInit(DISPATCHER_NORMAL, rank, &dispatcher));
    hccl::Stream hcclStream(stream);

    // Put this rank's own block into its slot.
    if (ok) {
        for (size_t i = 0; i < block; i++)
            host[i] = Pattern(rank, i);
        auto *own = static_cast<unsigned char *>(sh->recv[rank]) + static_cast<size_t>(rank) * block;
        ok = AclOk(sh, rank, "aclrtMemcpyAsync(H2D)",
                   aclrtMemcpyAsync(own, block, host, block, ACL_MEMCPY_HOST_TO_DEVICE, stream)) &&
             AclOk(sh, rank, "aclrtSynchronizeStream", aclrtSynchronizeStream(stream));
    }
    pthread_barrier_wait(&sh->barrier); // every buffer exists and holds its own block

    const int next = (rank + 1) % n;
    for (int step = 0; step < n - 1; step++) {
        if (ok && sh->failed.load() == 0) {
            const int slot = (rank - step + n) % n;
            auto *src = static_cast<unsigned char *>(sh->recv[rank]) + static_cast<size_t>(slot) * block;
            auto *dst = static_cast<unsigned char *>(sh->recv[next]) + static_cast<size_t>(slot) * block;
            const uint64_t destMax = total - static_cast<uint64_t>(slot) * block;
            HcclResult copied;
            if (sh->d2d) {
                hccl::DeviceMem dstMem = hccl::DeviceMem::create(dst, destMax);
                const hccl::DeviceMem srcMem = hccl::DeviceMem::create(src, block);
                copied = HcclD2DMemcpyAsync(dispatcher, dstMem, srcMem, hcclStream, static_cast<u32>(next),
                                            hccl::LinkType::LINK_HCCS);
            } else {
                copied = HcclMemcpyAsync(dispatcher, dst, destMax, src, block,
                                         HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_DEVICE_TO_DEVICE, hcclStream,
                                         static_cast<u32>(next), hccl::LinkType::LINK_HCCS);
            }
            ok = HcclOk(sh, rank, CopyName(sh), copied) &&
                 AclOk(sh, rank, "aclrtSynchronizeStream", aclrtSynchronizeStream(stream));
            arg->result.copies++;
        }
        pthread_barrier_wait(&sh->barrier); // step complete on every rank
    }

    if (ok && sh->failed.load() == 0) {
        ok = AclOk(sh, rank, "aclrtMemcpyAsync(D2H)",
                   aclrtMemcpyAsync(host, total, sh->recv[rank], total, ACL_MEMCPY_DEVICE_TO_HOST, stream)) &&
             AclOk(sh, rank, "aclrtSynchronizeStream", aclrtSynchronizeStream(stream));
    }
    if (ok && sh->failed.load() == 0) {
        for (int owner = 0; owner < n; owner++) {
            const unsigned char *b = host + static_cast<size_t>(owner) * block;
            for (size_t i = 0; i < block; i++) {
                if (b[i] != Pattern(owner, i)) {
                    fprintf(stderr, "ring_allgather: rank %d: block of rank %d differs at byte %zu\n", rank, owner,
                            i);
                    arg->result.badBlocks++;
                    break;
                }
            }
        }
        arg->result.checksum = Fnv1a(0xcbf29ce484222325ull, host, total);
    }
    // Nobody frees a buffer a peer may still write to.
    pthread_barrier_wait(&sh->barrier);

    if (dispatcher != nullptr)
        HcclDispatcherDestroy(dispatcher);
    if (host != nullptr)
        aclrtFreeHost(host);
    if (sh->recv[rank] != nullptr)
        aclrtFree(sh->recv[rank]);
    if (stream != nullptr)
        aclrtDestroyStream(stream);
    aclrtResetDevice(rank);
    return nullptr;
}

} // namespace

int main(int argc, char **argv)
{
    size_t blockBytes = 256 * 1024;
    bool d2d = false;
    int argi = 1;
    if (argi < argc && strcmp(argv[argi], "--d2d") == 0) {
        d2d = true;
        argi++;
    }
    if (argi < argc) {
        long long v = atoll(argv[argi]);
        if (v < 1 || argi + 1 < argc) {
            fprintf(stderr, "usage: %s [--d2d] [bytes per rank >= 1]\n", argv[0]);
            return 1;
        }
        blockBytes = static_cast<size_t>(v);
    }

    aclError ret = aclInit(nullptr);
    if (ret != ACL_SUCCESS) {
        fprintf(stderr, "ring_allgather: aclInit failed with error %d\n", static_cast<int>(ret));
        return 1;
    }
    uint32_t devices = 0;
    ret = aclrtGetDeviceCount(&devices);
    if (ret != ACL_SUCCESS || devices < 2) {
        fprintf(stderr, "ring_allgather: need at least 2 devices (aclrtGetDeviceCount: %d, %u devices)\n",
                static_cast<int>(ret), devices);
        aclFinalize();
        return 1;
    }

    Shared shared;
    shared.ranks = devices < static_cast<uint32_t>(kMaxRanks) ? static_cast<int>(devices) : kMaxRanks;
    shared.blockBytes = blockBytes;
    shared.d2d = d2d;
    for (void *&r : shared.recv)
        r = nullptr;
    pthread_barrier_init(&shared.barrier, nullptr, static_cast<unsigned>(shared.ranks));

    std::vector<RankArg> args(static_cast<size_t>(shared.ranks));
    std::vector<pthread_t> threads(static_cast<size_t>(shared.ranks));
    for (int r = 0; r < shared.ranks; r++) {
        args[static_cast<size_t>(r)].rank = r;
        args[static_cast<size_t>(r)].shared = &shared;
        pthread_create(&threads[static_cast<size_t>(r)], nullptr, RankMain, &args[static_cast<size_t>(r)]);
    }
    for (pthread_t &t : threads)
        pthread_join(t, nullptr);
    pthread_barrier_destroy(&shared.barrier);
    aclFinalize();

    int copies = 0, bad = 0;
    bool sameChecksum = true;
    for (const RankArg &a : args) {
        copies += a.result.copies;
        bad += a.result.badBlocks;
        sameChecksum = sameChecksum && a.result.checksum == args[0].result.checksum;
    }
    const int steps = shared.ranks - 1;
    printf("ring_allgather: %d ranks, %d steps, %zu bytes per rank, link HCCS\n", shared.ranks, steps, blockBytes);
    for (const RankArg &a : args)
        printf("rank %d: %d %s, gathered %d blocks, checksum 0x%016" PRIx64 "\n", a.rank,
               a.result.copies, CopyName(&shared), shared.ranks - a.result.badBlocks, a.result.checksum);
    if (shared.failed.load() != 0 || bad != 0 || !sameChecksum || copies != shared.ranks * steps) {
        printf("FAILED\n");
        return 1;
    }
    printf("ring_allgather: %d %s calls, all ranks agree\n", copies, CopyName(&shared));
    printf("OK\n");
    return 0;
}
