#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include "../plane_kernels.hpp"
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

bool cpu_supports(const std::string& isa) {
    if (isa == "generic") return true;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == "avx512f") return __builtin_cpu_supports("avx512f");
#endif
    return false;
}

template <class T>
const std::vector<MicroKernel<T>>& all_kernels() {
    static const std::vector<MicroKernel<T>> table = [] {
        std::vector<MicroKernel<T>> t;
        append_avx512_kernels<T>(t);
        append_avx2_kernels<T>(t);
        append_generic_kernels<T>(t);
        for (const auto& k : t)
            if (k.nr > kMaxNr || k.mr > kMaxMr || k.mc % k.mr != 0 || k.nc % k.nr != 0)
                throw std::logic_error(std::string("GEMM kernel ") + k.name + " has inconsistent blocking");
        return t;
    }();
    return table;
}

template <class T>
std::vector<MicroKernel<T>> usable_kernels() {
    std::vector<MicroKernel<T>> out;
    for (const auto& k : all_kernels<T>())
        if (cpu_supports(k.isa)) out.push_back(k);
    return out;
}

namespace {
// "auto" or an ISA name; read on every call so tests can switch kernels at run time.
std::atomic<const char*> g_isa{"auto"};
const char* const kIsas[] = {"auto", "avx512f", "avx2", "generic"};
}  // namespace

void select_isa(const std::string& isa) {
    for (const char* name : kIsas)
        if (isa == name) {
            if (isa != "auto" && !cpu_supports(isa))
                throw std::invalid_argument("ISA '" + isa + "' is not supported by this CPU");
            g_isa.store(name);
            return;
        }
    throw std::invalid_argument("unknown ISA '" + isa + "'; choose auto, avx512f, avx2 or generic");
}

std::string selected_isa() { return g_isa.load(); }

template <class T>
const MicroKernel<T>& active_kernel() {
    static const std::vector<MicroKernel<T>> usable = usable_kernels<T>();
    const std::string isa = g_isa.load();
    for (const auto& k : usable)
        if (isa == "auto" || isa == k.isa) return k;
    return usable.back();  // generic is always usable
}

template const std::vector<MicroKernel<float>>& all_kernels<float>();
template const std::vector<MicroKernel<double>>& all_kernels<double>();
template std::vector<MicroKernel<float>> usable_kernels<float>();
template std::vector<MicroKernel<double>> usable_kernels<double>();
template const MicroKernel<float>& active_kernel<float>();
template const MicroKernel<double>& active_kernel<double>();

}  // namespace fastconv::gemm

namespace fastconv {

template <class T>
const PlaneKernels<T>& active_plane_kernels() {
    static const PlaneKernels<T> table[] = {plane_kernels_avx512<T>(), plane_kernels_avx2<T>(), plane_kernels_generic<T>()};
    const std::string isa = gemm::selected_isa();
    for (const auto& planes : table)
        if (planes.isa && gemm::cpu_supports(planes.isa) && (isa == "auto" || isa == planes.isa)) return planes;
    return table[2];
}

template const PlaneKernels<float>& active_plane_kernels<float>();
template const PlaneKernels<double>& active_plane_kernels<double>();

}  // namespace fastconv
