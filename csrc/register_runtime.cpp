// Bindings for threads, GEMM kernels (exposed for tests and benchmarks) and build facts.
#include <algorithm>
#include <optional>

#include "bind_util.hpp"
#include "dense.hpp"
#include "gemm/driver.hpp"
#include "parallel.hpp"
#include "isa/isa.hpp"

namespace fastconv::bind {

namespace {

// scratch_elems < 0: each thread's slice as planned; otherwise that many elements (tests of
// the scratch checks).
template <class T>
py::array gemm_typed(const py::array& a, const py::array& b, index_t scratch_elems) {
    const index_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
    auto c = new_array<T>({M, N});
    T* cp = c.mutable_data();
    const T *ap = cdata<T>(a), *bp = cdata<T>(b);
    py::gil_scoped_release release;
    gemm_parallel<T>(M, N, K, {ap, K}, {bp, N}, {cp, M * N}, false, scratch_elems);
    return c;
}

py::array gemm_py(const py::array& a, const py::array& b, index_t scratch_elems) {
    const Dtype dt = float_dtype(a, "a");
    same_dtype(dt, float_dtype(b, "b"), "gemm");
    expect_ndim(a, 2, "a");
    expect_ndim(b, 2, "b");
    if (a.shape(1) != b.shape(0))
        throw std::invalid_argument("gemm: inner dimensions differ: a " + shape_str(a) + " . b " + shape_str(b));
    return dispatch(dt, [&](auto tag) -> py::array { return gemm_typed<decltype(tag)>(a, b, scratch_elems); });
}

// One micro-kernel call on a tile, the way XNNPACK's gemm-microkernel-tester drives its
// kernels: a (k*MR) and, when ldb == 0, b (k*NR) are packed panels, copied to 64-byte aligned
// scratch; with ldb > 0, b is k rows of ldb elements read in place (run_b_rows), copied one
// element off alignment. With `gather` (k row numbers, ldb > NR), B row p is b[gather[p], 1:]
// read through a table of row pointers (run_b_gather, column offset 1); a_ld > 0 then reads A's
// rows in place from a (MR x a_ld, row-major) instead of a packed panel.
// c (rows >= m, row stride = its width) is updated in place.
template <class T>
void ukernel_typed(const std::string& name, index_t k, const py::array& a, const py::array& b, py::array& c, int m,
                   int n, bool accumulate, const std::optional<py::array>& bias, index_t ldb,
                   const std::optional<py::array_t<std::int64_t>>& gather, index_t a_ld) {
    const gemm::MicroKernel<T>* kern = nullptr;
    for (const isa::Family& family : isa::families())
        for (const auto& cand : family.kernels<T>().gemm)
            if (name == cand.name && family.cpu_has()) kern = &cand;
    if (!kern) throw std::invalid_argument("ukernel: no usable kernel named '" + name + "'");
    if (k < 0 || m < 1 || m > kern->mr || n < 1 || n > kern->nr)
        throw std::invalid_argument("ukernel: need k >= 0, 1 <= m <= MR, 1 <= n <= NR");
    if (a_ld > 0 && !gather) throw std::invalid_argument("ukernel: a_ld needs gather");
    if (a_ld > 0 && a_ld < k) throw std::invalid_argument("ukernel: a_ld must be >= k");
    if (a_ld > 0)
        expect_shape(a, {index_t(kern->mr), a_ld}, "a");
    else
        expect_shape(a, {k * kern->mr}, "a");
    if (ldb == 0)
        expect_shape(b, {k * kern->nr}, "b");
    else if (ldb < kern->nr)
        throw std::invalid_argument("ukernel: ldb must be 0 (packed) or >= NR");
    else
        expect_shape(b, {k, ldb}, "b");
    expect_ndim(c, 2, "c");
    if (c.shape(0) < m || c.shape(1) < n) throw std::invalid_argument("ukernel: c is smaller than the tile");
    if (bias) expect_shape(*bias, {kern->mr}, "bias");
    gemm::AlignedBuffer<T> a_buf(a.size()), b_buf(b.size() + 1);
    std::copy(cdata<T>(a), cdata<T>(a) + a.size(), a_buf.get());
    T* b_at = b_buf.get() + (ldb == 0 ? 0 : 1);
    std::copy(cdata<T>(b), cdata<T>(b) + b.size(), b_at);
    T* cp = static_cast<T*>(c.mutable_data());
    const T* bp = bias ? cdata<T>(*bias) : nullptr;
    if (gather) {
        if (ldb <= kern->nr) throw std::invalid_argument("ukernel: gather needs ldb > NR");
        expect_shape(*gather, {k}, "gather");
        std::vector<const T*> rows(static_cast<std::size_t>(k));
        for (index_t p = 0; p < k; ++p) {
            const std::int64_t r = gather->at(p);
            if (r < 0 || r >= k) throw std::invalid_argument("ukernel: gather rows must be in [0, k)");
            rows[p] = b_at + r * ldb;
        }
        kern->run_b_gather(k, a_buf.get(), a_ld, rows.data(), 1, cp, c.shape(1), m, n, accumulate, bp);
    } else if (ldb == 0) {
        kern->run(k, a_buf.get(), b_at, cp, c.shape(1), m, n, accumulate, bp);
    } else {
        kern->run_b_rows(k, a_buf.get(), b_at, ldb, cp, c.shape(1), m, n, accumulate, bp);
    }
}

void ukernel_py(const std::string& name, index_t k, const py::array& a, const py::array& b, py::array& c, int m,
                int n, bool accumulate, const std::optional<py::array>& bias, index_t ldb,
                const std::optional<py::array_t<std::int64_t>>& gather, index_t a_ld) {
    const Dtype dt = float_dtype(c, "c");
    same_dtype(dt, float_dtype(a, "a"), "ukernel");
    same_dtype(dt, float_dtype(b, "b"), "ukernel");
    if (bias) same_dtype(dt, float_dtype(*bias, "bias"), "ukernel");
    if (!c.writeable()) throw std::invalid_argument("ukernel: c must be writeable");
    dispatch(dt, [&](auto tag) {
        ukernel_typed<decltype(tag)>(name, k, a, b, c, m, n, accumulate, bias, ldb, gather, a_ld);
        return 0;
    });
}

template <class T>
py::list kernel_list(bool usable_only) {
    py::list out;
    for (const isa::Family& family : isa::families()) {
        if (usable_only && !family.cpu_has()) continue;
        for (const auto& k : family.kernels<T>().gemm) {
            py::dict d;
            d["name"] = k.name;
            d["isa"] = family.name;
            d["mr"] = k.mr;
            d["nr"] = k.nr;
            d["lanes"] = k.lanes;
            d["kc"] = k.kc;
            d["mc"] = k.mc;
            d["nc"] = k.nc;
            out.append(d);
        }
    }
    return out;
}

py::list usable_families() {
    py::list names;
    for (const isa::Family& family : isa::families())
        if (family.cpu_has()) names.append(family.name);
    return names;
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
    d["gemm_selection"] = isa::selected();
    d["gemm_f32"] = isa::gemm_kernel<float>().name;
    d["gemm_f64"] = isa::gemm_kernel<double>().name;
    d["cpu_isas"] = usable_families();
    return d;
}

// The kernel tables, their blocking constants and the family selection (tests, benchmarks).
void register_kernel_tables(py::module_& m) {
    using namespace pybind11::literals;
    m.def(
        "plane_kernel_limits",
        [] {
            py::dict d;
            d["row_block"] = kPoolRowBlock;
            d["narrow_row"] = kPoolNarrowRow;
            d["row_group"] = kPoolGroup;
            d["row_group_wide"] = kPoolGroupWide;
            d["narrow_plane"] = kNarrowPlaneMax;
            d["row_vector_bytes"] = kRowVectorBytes;
            d["dot_lanes_f32"] = kDotLanes<float>;
            d["dot_lanes_f64"] = kDotLanes<double>;
            d["window_table"] = kWindowTableMax;
            return d;
        },
        "Blocking constants of the pooling kernels (tests aim their shapes at them).");
    m.def("ukernel", &ukernel_py, "name"_a, "k"_a, "a"_a, "b"_a, "c"_a, "m"_a, "n"_a, "accumulate"_a, "bias"_a,
          "ldb"_a = 0, "gather"_a = py::none(), "a_ld"_a = 0,
          "One micro-kernel call on packed panels (ldb = 0), B rows read in place, or B rows gathered through "
          "a row table (tests).");
    m.def("gemm_kernels", &usable_families, "GEMM kernel families (ISAs) this CPU can run, best first.");
    m.def(
        "cache_sizes",
        [] {
            const gemm::CacheSizes& c = gemm::cache_sizes();
            py::dict d;
            d["l1d"] = c.l1d;
            d["l2"] = c.l2;
            d["l3"] = c.l3;
            d["detected"] = c.detected;
            return d;
        },
        "Data cache sizes in bytes that blocking uses (detected, or defaults where the CPU does not say).");
    m.def(
        "gemm_kernel_table",
        [](bool usable_only) { return py::make_tuple(kernel_list<float>(usable_only), kernel_list<double>(usable_only)); },
        "usable_only"_a = true, "(float32 kernels, float64 kernels) with their blocking, best first.");
    m.def("set_gemm_kernel", &isa::select, "name"_a,
          "Force a kernel family from gemm_kernels(), or 'auto' for the best one (tests, benchmarks).");
    m.def(
        "get_gemm_kernel", [] { return std::string(isa::active().name); },
        "The kernel family in use.");
    m.def(
        "fma_peak_gflops",
        [](bool f64, double seconds) {
            const int threads = num_threads();
            py::gil_scoped_release release;
            return f64 ? isa::measure_fma_peak<double>(seconds, threads)
                       : isa::measure_fma_peak<float>(seconds, threads);
        },
        "f64"_a, "seconds"_a = 0.2,
        "FMA ceiling (GFLOP/s) of this machine for the active kernel's ISA, on get_num_threads() threads.");
}

}  // namespace

void register_runtime(py::module_& m) {
    using namespace pybind11::literals;
    m.def("set_num_threads", &set_num_threads, "n"_a, "Threads for every native kernel.");
    m.def("get_num_threads", &num_threads, "Threads the native kernels use.");
    m.def("blas_threads_callback_address", &blas_threads_callback_address,
          "Address of the callback (OpenBLAS's openblas_threads_callback signature) that runs OpenBLAS's "
          "parallel regions on fastconv's OpenMP threads.");
    m.def("blas_regions_run", &blas_regions_run, "OpenBLAS parallel regions run through that callback so far.");
    m.def("gemm", &gemm_py, "a"_a, "b"_a, "scratch_elems"_a = -1,
          "a @ b with fastconv's own blocked GEMM (2-D, C-contiguous). scratch_elems (tests only): give each "
          "thread that many elements of scratch instead of what the plan books.");
    m.def("set_debug_poison", &set_debug_poison, "on"_a,
          "Debug mode for tests: outputs and scratch start as NaN, and writes past a thread's scratch slice "
          "raise RuntimeError after the call.");
    m.def("get_debug_poison", &debug_poison);
    register_kernel_tables(m);
    m.def("build_info", &build_info);
    m.def(
        "scratch_bytes", [] { return py::make_tuple(gemm::ScratchStats::current(), gemm::ScratchStats::peak()); },
        "(bytes of kernel scratch alive now, high-water mark since the last reset)");
    m.def("reset_scratch_peak", &gemm::ScratchStats::reset_peak, "Restart the scratch high-water mark.");
}

}  // namespace fastconv::bind
