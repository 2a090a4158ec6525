// The ISA table: one family of kernels per instruction set compiled into this build, best
// first. A family's GEMM micro-kernels, FMA probe and plane kernels come from one translation
// unit built with that ISA's flags (csrc/isa/<family>.cpp). Kernel selection, the peak probe
// and the bindings all iterate this table; no other file spells an ISA's name.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "gemm/kernel.hpp"
#include "plane_kernels.hpp"

namespace fastconv::isa {

using gemm::index_t;

// A family's GEMM micro-kernels, best first: a view of a constant array in its translation unit.
template <class T>
struct KernelList {
    const gemm::MicroKernel<T>* first;
    int count;
    const gemm::MicroKernel<T>* begin() const { return first; }
    const gemm::MicroKernel<T>* end() const { return first + count; }
    const gemm::MicroKernel<T>& front() const { return *first; }
    bool empty() const { return count == 0; }
};

template <class T>
struct Kernels {
    KernelList<T> gemm;
    // The FMA ceiling for this vector width: FLOP done in `iters` steps (0: no probe built).
    double (*fma_burn)(index_t iters, T* sink);
    PlaneKernels<T> planes;
};

struct Family {
    const char* name;  // "avx512f", "avx2", "generic"
    bool (*cpu_has)();
    Kernels<float> f32;
    Kernels<double> f64;

    template <class T>
    const Kernels<T>& kernels() const {
        if constexpr (std::is_same_v<T, float>) return f32;
        else return f64;
    }
};

// Each family's translation unit exports its Family as constant-initialised data (null when
// built without its ISA's flags): code compiled with AVX-512 flags must not run, not even to
// copy a descriptor, before cpu_has() said the CPU has them -- a struct copy there is free to
// use zmm registers, which raised SIGILL on AVX2-only CPUs.
const Family* avx512_family();
const Family* avx2_family();
const Family* generic_family();

// Every family compiled in, best first; the generic one, always last, runs on any CPU.
const std::vector<Family>& families();

// Forces a family by name, or "auto" for the best one this CPU runs; read on every call, so
// tests can switch families at run time.
void select(const std::string& family);
std::string selected();
const Family& active();

template <class T>
const gemm::MicroKernel<T>& gemm_kernel() {
    return active().kernels<T>().gemm.front();
}
template <class T>
const PlaneKernels<T>& plane_kernels() {
    return active().kernels<T>().planes;
}
// GFLOP/s of the FMA ceiling for the active family, measured over ~`seconds` on `threads`.
template <class T>
double measure_fma_peak(double seconds, int threads);

}  // namespace fastconv::isa
