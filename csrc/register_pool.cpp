// Bindings for max/average pooling and ReLU.
#include <cmath>
#include <cstdint>
#include <optional>

#include "bind_util.hpp"
#include "pool.hpp"

namespace fastconv::bind {

namespace {

Conv2dParams pool_params(const std::vector<index_t>& shape, index_t kh, index_t kw, index_t sh, index_t sw, index_t ph,
                         index_t pw) {
    if (shape.size() != 4) throw std::invalid_argument("input must be 4-D (N, C, H, W)");
    const Window win = window(kh, kw, sh, sw, ph, pw);
    check_pool_padding(win);
    return make_params(shape[0], shape[1], shape[2], shape[3], shape[1], win);
}

std::vector<index_t> shape_of(const py::array& a, const char* name) {
    expect_ndim(a, 4, name);
    return {a.shape(0), a.shape(1), a.shape(2), a.shape(3)};
}

py::tuple max_pool2d_forward_py(const py::array& x, index_t kh, index_t kw, index_t sh, index_t sw, index_t ph,
                                index_t pw, std::optional<double> pad_value) {
    if (pad_value && std::isnan(*pad_value)) throw std::invalid_argument("pad_value must not be NaN");
    const Dtype dt = float_dtype(x, "x");
    const Conv2dParams p = pool_params(shape_of(x, "x"), kh, kw, sh, sw, ph, pw);
    return dispatch(dt, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        auto out = new_array<T>({p.n, p.c, p.oh, p.ow});
        auto idx = new_array<std::int64_t>({p.n, p.c, p.oh, p.ow});
        T* o = out.mutable_data();
        std::int64_t* ip = idx.mutable_data();
        const T* xp = cdata<T>(x);
        const T value = pad_value ? static_cast<T>(*pad_value) : T(0);
        {
            py::gil_scoped_release release;
            max_pool2d_forward(p, xp, o, ip, pad_value ? &value : nullptr);
        }
        return py::make_tuple(out, idx);
    });
}

py::array max_pool2d_backward_py(const py::array& dout, const py::array& indices, const std::vector<index_t>& shape,
                                 index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw) {
    const Dtype dt = float_dtype(dout, "dout");
    const Conv2dParams p = pool_params(shape, kh, kw, sh, sw, ph, pw);
    expect_shape(dout, {p.n, p.c, p.oh, p.ow}, "dout");
    expect_shape(indices, {p.n, p.c, p.oh, p.ow}, "indices");
    if (!holds<std::int64_t>(indices) || !(indices.flags() & py::array::c_style) ||
        reinterpret_cast<std::uintptr_t>(indices.data()) % sizeof(std::int64_t) != 0)
        throw py::type_error("indices must be a C-contiguous, aligned int64 array");
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto dx = new_array<T>({p.n, p.c, p.h, p.w});
        T* d = dx.mutable_data();
        const T* g = cdata<T>(dout);
        const auto* ip = static_cast<const std::int64_t*>(indices.data());
        bool ok;
        {
            py::gil_scoped_release release;
            ok = max_pool2d_backward(p, g, ip, d);
        }
        if (!ok)
            throw std::invalid_argument("indices must be -1 (padding) or lie in [0, " + std::to_string(p.in_plane()) +
                                        ") for input planes " + std::to_string(p.h) + "x" + std::to_string(p.w));
        return dx;
    });
}

py::array avg_pool2d_forward_py(const py::array& x, index_t kh, index_t kw, index_t sh, index_t sw, index_t ph,
                                index_t pw) {
    const Dtype dt = float_dtype(x, "x");
    const Conv2dParams p = pool_params(shape_of(x, "x"), kh, kw, sh, sw, ph, pw);
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto out = new_array<T>({p.n, p.c, p.oh, p.ow});
        T* o = out.mutable_data();
        const T* xp = cdata<T>(x);
        py::gil_scoped_release release;
        avg_pool2d_forward(p, xp, o);
        return out;
    });
}

py::array avg_pool2d_backward_py(const py::array& dout, const std::vector<index_t>& shape, index_t kh, index_t kw,
                                 index_t sh, index_t sw, index_t ph, index_t pw) {
    const Dtype dt = float_dtype(dout, "dout");
    const Conv2dParams p = pool_params(shape, kh, kw, sh, sw, ph, pw);
    expect_shape(dout, {p.n, p.c, p.oh, p.ow}, "dout");
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto dx = new_array<T>({p.n, p.c, p.h, p.w});
        T* d = dx.mutable_data();
        const T* g = cdata<T>(dout);
        py::gil_scoped_release release;
        avg_pool2d_backward(p, g, d);
        return dx;
    });
}

void check_bool(const py::array& a, const char* name) {
    if (a.dtype().kind() != 'b' || a.itemsize() != 1)
        throw std::invalid_argument(std::string(name) + " must be a bool array");
}

// `mask`, when given, receives the book's Relu.mask (x <= 0).
py::array relu_forward_py(const py::array& x, std::optional<py::array> mask) {
    const Dtype dt = float_dtype(x, "x");
    if (mask) {
        check_bool(*mask, "mask");
        check_writable_like(*mask, x, "mask");
    }
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto y = new_array<T>(full_shape(x));
        T* yp = y.mutable_data();
        const T* xp = cdata<T>(x);
        bool* mp = mask ? static_cast<bool*>(mask->mutable_data()) : nullptr;
        const index_t n = x.size();
        py::gil_scoped_release release;
        relu_forward(n, xp, yp, mp);
        return y;
    });
}

// `out` may be dout itself (the book's Relu.backward zeroes dout in place).
py::array relu_backward_py(const py::array& dout, const py::array& x, const std::optional<py::array>& out) {
    const Dtype dt = float_dtype(dout, "dout");
    same_dtype(dt, float_dtype(x, "x"), "relu_backward");
    expect_shape(dout, full_shape(x), "dout");
    if (out) {
        same_dtype(dt, float_dtype(*out, "out"), "relu_backward");
        check_writable_like(*out, x, "out");
    }
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        py::array dx = out ? *out : py::array(new_array<T>(full_shape(x)));
        T* d = static_cast<T*>(dx.mutable_data());
        const T *g = cdata<T>(dout), *xp = cdata<T>(x);
        const index_t n = x.size();
        py::gil_scoped_release release;
        relu_backward(n, g, xp, d);
        return dx;
    });
}

py::array relu_backward_mask_py(const py::array& dout, const py::array& mask, const std::optional<py::array>& out) {
    const Dtype dt = float_dtype(dout, "dout");
    check_bool(mask, "mask");
    expect_shape(mask, full_shape(dout), "mask");
    if (out) {
        same_dtype(dt, float_dtype(*out, "out"), "relu_backward");
        check_writable_like(*out, dout, "out");
    }
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        py::array dx = out ? *out : py::array(new_array<T>(full_shape(dout)));
        T* d = static_cast<T*>(dx.mutable_data());
        const T* g = cdata<T>(dout);
        const bool* mp = static_cast<const bool*>(mask.data());
        const index_t n = dout.size();
        py::gil_scoped_release release;
        relu_backward_mask(n, g, mp, d);
        return dx;
    });
}

}  // namespace

void register_pool(py::module_& m) {
    using namespace pybind11::literals;
    m.def("max_pool2d_forward", &max_pool2d_forward_py, "x"_a, "kh"_a, "kw"_a, "sh"_a, "sw"_a, "ph"_a, "pw"_a,
          "pad_value"_a = py::none(),
          "Max pooling: (out, argmax as flat h*W + w per plane). Padding is -inf unless pad_value is given; "
          "argmax -1 marks a window whose max is padding.");
    m.def("max_pool2d_backward", &max_pool2d_backward_py, "dout"_a, "indices"_a, "input_shape"_a, "kh"_a, "kw"_a,
          "sh"_a, "sw"_a, "ph"_a, "pw"_a, "Max pooling backward from the argmax indices.");
    m.def("avg_pool2d_forward", &avg_pool2d_forward_py, "x"_a, "kh"_a, "kw"_a, "sh"_a, "sw"_a, "ph"_a, "pw"_a,
          "Average pooling (zero padding counts in the divisor).");
    m.def("avg_pool2d_backward", &avg_pool2d_backward_py, "dout"_a, "input_shape"_a, "kh"_a, "kw"_a, "sh"_a, "sw"_a,
          "ph"_a, "pw"_a, "Average pooling backward.");
    m.def("relu_forward", &relu_forward_py, "x"_a, "mask"_a = py::none(),
          "The book's ReLU: x where x > 0, else 0; `mask` (bool, x's shape) receives x <= 0.");
    m.def("relu_backward", &relu_backward_py, "dout"_a, "x"_a, "out"_a = py::none(),
          "ReLU backward: dout where not x <= 0, into `out` when given (may be dout).");
    m.def("relu_backward_mask", &relu_backward_mask_py, "dout"_a, "mask"_a, "out"_a = py::none(),
          "ReLU backward from the book's mask: dout where not mask, into `out` when given (may be dout).");
}

}  // namespace fastconv::bind
