// Backing storage of the memory tiers for the Verilator model (see store.sv).
//
// Each tier is a file mapped MAP_SHARED, so the Python testbench running in
// the same process (or any other process) loads and inspects a tier through
// numpy.memmap of the same file: backdoor transfers of 100 MiB take well
// under a second and no per-word calls. The files live in
// $OPENRDU_STORE_DIR as tier<N>.bin; without that variable a tier is
// anonymous zeroed memory. Files are sparse, so a 1 GiB tier costs only the
// pages touched.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace {
constexpr int kTiers = 4;
uint8_t* base[kTiers];
int64_t size[kTiers];

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "openrdu_store: %s\n", what.c_str());
    std::abort();
}

void check(int tier, int64_t addr) {
    if (tier < 0 || tier >= kTiers || !base[tier])
        fail("tier " + std::to_string(tier) + " used before openrdu_store_open");
    if (addr < 0 || addr + 4 > size[tier])
        fail("tier " + std::to_string(tier) + " access at " + std::to_string(addr) + " outside its " +
             std::to_string(size[tier]) + " bytes (the controller should have refused it)");
}
}  // namespace

extern "C" void openrdu_store_open(int tier, long long capacity) {
    if (tier < 0 || tier >= kTiers) fail("no tier " + std::to_string(tier));
    if (base[tier]) return;
    const char* dir = std::getenv("OPENRDU_STORE_DIR");
    void* map;
    if (dir && *dir) {
        std::string path = std::string(dir) + "/tier" + std::to_string(tier) + ".bin";
        int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
        if (fd < 0) fail("cannot open " + path + ": " + std::strerror(errno));
        if (ftruncate(fd, capacity) != 0) fail("cannot size " + path + ": " + std::strerror(errno));
        map = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
    } else {
        map = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    }
    if (map == MAP_FAILED) fail("cannot map tier " + std::to_string(tier) + ": " + std::strerror(errno));
    base[tier] = static_cast<uint8_t*>(map);
    size[tier] = capacity;
}

extern "C" int openrdu_store_read32(int tier, long long addr) {
    check(tier, addr);
    uint32_t word;
    std::memcpy(&word, base[tier] + addr, 4);
    return static_cast<int>(word);
}

extern "C" void openrdu_store_write32(int tier, long long addr, int data) {
    check(tier, addr);
    uint32_t word = static_cast<uint32_t>(data);
    std::memcpy(base[tier] + addr, &word, 4);
}
