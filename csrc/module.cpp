// fastconv._core: creates the module; each register_* file binds one area.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace fastconv::bind {
void register_conv(py::module_& m);
void register_pool(py::module_& m);
void register_runtime(py::module_& m);
void register_layers(py::module_& m);
}  // namespace fastconv::bind

#ifndef FASTCONV_VERSION
#define FASTCONV_VERSION "0.0.0"
#endif

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastconv's C++ kernels (OpenMP, GIL released while they run)";
    m.attr("__version__") = FASTCONV_VERSION;
    fastconv::bind::register_conv(m);
    fastconv::bind::register_pool(m);
    fastconv::bind::register_runtime(m);
    fastconv::bind::register_layers(m);
}
