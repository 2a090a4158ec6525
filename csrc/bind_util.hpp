// Helpers shared by the register_*.cpp binding files: argument checks that run with the
// GIL held (before any kernel releases it) and float32/float64 dispatch.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>

#include <string>
#include <vector>

#include "params.hpp"
#include "scratch.hpp"

namespace fastconv::bind {

namespace py = pybind11;

enum class Dtype { f32, f64 };

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// a's elements are T in native byte order. Compared by type number, not by identity: an
// unpickled array (the book's load_params) carries an equal but distinct dtype object.
template <class T>
bool holds(const py::array& a) {
    const py::dtype d = a.dtype(), want = py::dtype::of<T>();
    if (d.is(want)) return true;
    const char order = d.byteorder();
    const char native = PY_BIG_ENDIAN ? '>' : '<';
    return d.num() == want.num() && (order == '=' || order == '|' || order == native);
}

// The Python layer hands over C-contiguous float32/float64 arrays; anything else is a
// programming error on the caller's side, reported as TypeError/ValueError, never a crash.
inline Dtype float_dtype(const py::array& a, const char* name) {
    Dtype dt;
    if (holds<float>(a))
        dt = Dtype::f32;
    else if (holds<double>(a))
        dt = Dtype::f64;
    else
        throw py::type_error(std::string(name) + " must be float32 or float64, got " +
                             std::string(py::str(a.dtype())));
    if (!(a.flags() & py::array::c_style))
        throw py::type_error(std::string(name) + " must be C-contiguous");
    if (reinterpret_cast<std::uintptr_t>(a.data()) % static_cast<std::uintptr_t>(a.itemsize()) != 0)
        throw py::type_error(std::string(name) + " must be aligned to its element size");
    return dt;
}

inline void same_dtype(Dtype a, Dtype b, const char* what) {
    if (a != b) throw py::type_error(std::string(what) + ": operands must share one dtype (float32 or float64)");
}

inline void expect_ndim(const py::array& a, py::ssize_t ndim, const char* name) {
    if (a.ndim() != ndim)
        throw std::invalid_argument(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " +
                                    shape_str(a));
}

inline void expect_shape(const py::array& a, const std::vector<index_t>& shape, const char* name) {
    bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
    for (std::size_t d = 0; ok && d < shape.size(); ++d) ok = a.shape(d) == shape[d];
    if (!ok) {
        std::string want = "(";
        for (std::size_t d = 0; d < shape.size(); ++d) want += (d ? ", " : "") + std::to_string(shape[d]);
        throw std::invalid_argument(std::string(name) + " has shape " + shape_str(a) + ", expected " + want + ")");
    }
}

inline std::vector<index_t> full_shape(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

// Throws unless `a` is a writeable, C-contiguous, aligned array of x's shape.
inline void check_writable_like(const py::array& a, const py::array& x, const char* name) {
    expect_shape(a, full_shape(x), name);
    if (!a.writeable() || !(a.flags() & py::array::c_style) ||
        reinterpret_cast<std::uintptr_t>(a.data()) % a.itemsize() != 0)
        throw std::invalid_argument(std::string(name) + " must be a writeable, C-contiguous, aligned array");
}

template <class T>
const T* cdata(const py::array& a) {
    return static_cast<const T*>(a.data());
}

// Uninitialised, or NaN-poisoned in debug mode so that an element no kernel wrote shows.
template <class T>
py::array_t<T> new_array(const std::vector<index_t>& shape) {
    py::array_t<T> a(std::vector<py::ssize_t>(shape.begin(), shape.end()));
    if (debug_poison()) fill_poison(a.mutable_data(), static_cast<index_t>(a.size()));
    return a;
}

// Calls f(T{}) with T = float or double.
template <class F>
decltype(auto) dispatch(Dtype dt, F&& f) {
    if (dt == Dtype::f32) return f(float{});
    return f(double{});
}

inline Window window(index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw) {
    return Window{kh, kw, sh, sw, ph, pw};
}

}  // namespace fastconv::bind
