// Bindings for threads, GEMM kernels (exposed for tests and benchmarks) and build facts.
#include <algorithm>

#include "bind_util.hpp"
#include "gemm/driver.hpp"
#include "parallel.hpp"

namespace fastconv::bind {

namespace {

template <class T>
py::array gemm_typed(const py::array& a, const py::array& b) {
    const index_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
    auto c = new_array<T>({M, N});
    T* cp = c.mutable_data();
    const T *ap = cdata<T>(a), *bp = cdata<T>(b);
    py::gil_scoped_release release;
    const gemm::MicroKernel<T>& kern = gemm::active_kernel<T>();
    // Work items: blocks of MC rows x NC columns, each a full-depth driver call.
    const index_t mb = gemm::ceil_div(M, kern.mc), nb = gemm::ceil_div(N, kern.nc);
    const int threads = num_threads();
    const index_t per = gemm::round_up(gemm::scratch_elems(kern, std::min(M, kern.mc), std::min(N, kern.nc), K), 64);
    gemm::AlignedBuffer<T> scratch(per * threads);
    parallel_for_flush(mb * nb, [&](index_t item) {
        const index_t i0 = (item / nb) * kern.mc, j0 = (item % nb) * kern.nc;
        const index_t m = std::min(kern.mc, M - i0), n = std::min(kern.nc, N - j0);
        gemm::gemm_blocked(
            kern, m, n, K,
            [&](index_t ic, index_t mc, index_t pc, index_t kc, T* dst) {
                gemm::pack_a_rows(ap + i0 * K, K, m, kern.mr, ic, mc, pc, kc, dst);
            },
            [&](index_t pc, index_t kc, index_t jc, index_t nc, T* dst) {
                gemm::pack_b_rows(bp + j0, N, n, kern.nr, pc, kc, jc, nc, dst);
            },
            cp + i0 * N + j0, N, false, static_cast<const T*>(nullptr), scratch.get() + thread_index() * per);
    }, 1, threads);
    return c;
}

py::array gemm_py(const py::array& a, const py::array& b) {
    const Dtype dt = float_dtype(a, "a");
    same_dtype(dt, float_dtype(b, "b"), "gemm");
    expect_ndim(a, 2, "a");
    expect_ndim(b, 2, "b");
    if (a.shape(1) != b.shape(0))
        throw std::invalid_argument("gemm: inner dimensions differ: a " + shape_str(a) + " . b " + shape_str(b));
    return dispatch(dt, [&](auto tag) -> py::array { return gemm_typed<decltype(tag)>(a, b); });
}

template <class T>
py::list kernel_list(bool usable_only) {
    py::list out;
    for (const auto& k : usable_only ? gemm::usable_kernels<T>() : gemm::all_kernels<T>()) {
        py::dict d;
        d["name"] = k.name;
        d["isa"] = k.isa;
        d["mr"] = k.mr;
        d["nr"] = k.nr;
        d["kc"] = k.kc;
        d["mc"] = k.mc;
        d["nc"] = k.nc;
        out.append(d);
    }
    return out;
}

py::dict build_info() {
    py::dict d;
    d["compiler"] =
#if defined(__clang__)
        "clang " __clang_version__;
#elif defined(__GNUC__)
        "gcc " __VERSION__;
#elif defined(_MSC_VER)
        "msvc " + std::to_string(_MSC_VER);
#else
        "unknown";
#endif
#if defined(_OPENMP)
    d["openmp"] = "OpenMP " + std::to_string(_OPENMP);
#else
    d["openmp"] = "none (serial build)";
#endif
    d["gemm_selection"] = gemm::selected_isa();
    d["gemm_f32"] = gemm::active_kernel<float>().name;
    d["gemm_f64"] = gemm::active_kernel<double>().name;
    py::list isas;
    for (const char* isa : {"avx512f", "avx2", "generic"})
        if (gemm::cpu_supports(isa)) isas.append(isa);
    d["cpu_isas"] = isas;
    return d;
}

}  // namespace

void register_runtime(py::module_& m) {
    using namespace pybind11::literals;
    m.def("set_num_threads", &set_num_threads, "n"_a, "Threads for every native kernel.");
    m.def("get_num_threads", &num_threads, "Threads the native kernels use.");
    m.def("gemm", &gemm_py, "a"_a, "b"_a, "a @ b with fastconv's own blocked GEMM (2-D, C-contiguous).");
    m.def(
        "gemm_kernels",
        [] {
            py::list names;
            for (const char* isa : {"avx512f", "avx2", "generic"})
                if (gemm::cpu_supports(isa)) names.append(isa);
            return names;
        },
        "GEMM kernel families (ISAs) this CPU can run, best first.");
    m.def(
        "gemm_kernel_table",
        [](bool usable_only) { return py::make_tuple(kernel_list<float>(usable_only), kernel_list<double>(usable_only)); },
        "usable_only"_a = true, "(float32 kernels, float64 kernels) with their blocking, best first.");
    m.def("set_gemm_kernel", &gemm::select_isa, "name"_a,
          "Force a kernel family from gemm_kernels(), or 'auto' for the best one (tests, benchmarks).");
    m.def(
        "get_gemm_kernel", [] { return std::string(gemm::active_kernel<float>().isa); },
        "The kernel family in use.");
    m.def(
        "fma_peak_gflops",
        [](bool f64, double seconds) {
            const int threads = num_threads();
            py::gil_scoped_release release;
            return f64 ? gemm::measure_fma_peak<double>(seconds, threads)
                       : gemm::measure_fma_peak<float>(seconds, threads);
        },
        "f64"_a, "seconds"_a = 0.2,
        "FMA ceiling (GFLOP/s) of this machine for the active kernel's ISA, on get_num_threads() threads.");
    m.def("build_info", &build_info);
    m.def(
        "scratch_bytes", [] { return py::make_tuple(gemm::ScratchStats::current(), gemm::ScratchStats::peak()); },
        "(bytes of kernel scratch alive now, high-water mark since the last reset)");
    m.def("reset_scratch_peak", &gemm::ScratchStats::reset_peak, "Restart the scratch high-water mark.");
}

}  // namespace fastconv::bind
