#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

#include "kernel.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace fastconv::gemm {

namespace {
// Linux's per-core cache description (level, type, size such as "512K"). glibc's sysconf derives
// L3 from CPUID, which some hypervisors fill with the host's whole L3 (256 MiB on a 32 MiB EPYC
// guest), so sysfs is asked first and sysconf only where it says nothing.
void read_sysfs_caches(CacheSizes& c) {
#if defined(__linux__)
    for (int index = 0; index < 8; ++index) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
        std::ifstream level_file(dir + "level"), type_file(dir + "type"), size_file(dir + "size");
        int level = 0;
        std::string type, size;
        if (!(level_file >> level) || !(type_file >> type) || !(size_file >> size)) break;
        if (type == "Instruction") continue;
        index_t bytes = std::atol(size.c_str());
        if (size.back() == 'K') bytes *= 1024;
        if (size.back() == 'M') bytes *= 1024 * 1024;
        index_t* slot = level == 1 ? &c.l1d : level == 2 ? &c.l2 : level == 3 ? &c.l3 : nullptr;
        if (slot && *slot == 0) *slot = bytes;
    }
#else
    (void)c;
#endif
}
}  // namespace

const CacheSizes& cache_sizes() {
    static const CacheSizes sizes = [] {
        CacheSizes c;
        read_sysfs_caches(c);
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
        if (c.l1d <= 0) c.l1d = std::max<long>(sysconf(_SC_LEVEL1_DCACHE_SIZE), 0);
        if (c.l2 <= 0) c.l2 = std::max<long>(sysconf(_SC_LEVEL2_CACHE_SIZE), 0);
        if (c.l3 <= 0) c.l3 = std::max<long>(sysconf(_SC_LEVEL3_CACHE_SIZE), 0);
#endif
        c.detected = c.l1d > 0 && c.l2 > 0;
        if (c.l1d <= 0) c.l1d = 32 * 1024;
        if (c.l2 <= 0) c.l2 = 512 * 1024;
        if (c.l3 <= 0) c.l3 = 8 * 1024 * 1024;
        return c;
    }();
    return sizes;
}

}  // namespace fastconv::gemm
