// Bindings for im2col, col2im and convolution.
#include "bind_util.hpp"
#include "conv.hpp"
#include "im2col.hpp"
#include "parallel.hpp"
#include "isa/isa.hpp"

#include <algorithm>

namespace fastconv::bind {

namespace {

Conv2dParams image_params(const py::array& x, index_t oc, const Window& win) {
    expect_ndim(x, 4, "x");
    return make_params(x.shape(0), x.shape(1), x.shape(2), x.shape(3), oc, win);
}

py::array im2col_py(const py::array& x, index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw) {
    const Dtype dt = float_dtype(x, "x");
    const Conv2dParams p = image_params(x, 0, window(kh, kw, sh, sw, ph, pw));
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto col = new_array<T>({p.n * p.out_plane(), p.patch()});
        T* out = col.mutable_data();
        const T* in = cdata<T>(x);
        py::gil_scoped_release release;
        im2col(p, in, out);
        return col;
    });
}

py::array col2im_py(const py::array& col, const std::vector<index_t>& shape, index_t kh, index_t kw, index_t sh,
                    index_t sw, index_t ph, index_t pw) {
    const Dtype dt = float_dtype(col, "col");
    if (shape.size() != 4) throw std::invalid_argument("input_shape must have 4 entries (N, C, H, W)");
    const Conv2dParams p = make_params(shape[0], shape[1], shape[2], shape[3], 0, window(kh, kw, sh, sw, ph, pw));
    expect_shape(col, {p.n * p.out_plane(), p.patch()}, "col");
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto img = new_array<T>({p.n, p.c, p.h, p.w});
        T* out = img.mutable_data();
        const T* in = cdata<T>(col);
        py::gil_scoped_release release;
        col2im(p, in, out);
        return img;
    });
}

Conv2dParams conv_params(const py::array& x, const py::array& w, index_t sh, index_t sw, index_t ph, index_t pw) {
    expect_ndim(w, 4, "W");
    if (x.ndim() == 4 && x.shape(1) != w.shape(1))
        throw std::invalid_argument("channel mismatch: x has C=" + std::to_string(x.shape(1)) +
                                    " but W expects C=" + std::to_string(w.shape(1)));
    return image_params(x, w.shape(0), window(w.shape(2), w.shape(3), sh, sw, ph, pw));
}

py::array conv2d_forward_py(const py::array& x, const py::array& w, const std::optional<py::array>& b, index_t sh,
                            index_t sw, index_t ph, index_t pw) {
    const Dtype dt = float_dtype(x, "x");
    same_dtype(dt, float_dtype(w, "W"), "conv2d");
    if (b) {
        same_dtype(dt, float_dtype(*b, "b"), "conv2d");
        expect_shape(*b, {w.ndim() == 4 ? w.shape(0) : -1}, "b");
    }
    const Conv2dParams p = conv_params(x, w, sh, sw, ph, pw);
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto out = new_array<T>({p.n, p.oc, p.oh, p.ow});
        T* o = out.mutable_data();
        const T *xp = cdata<T>(x), *wp = cdata<T>(w), *bp = b ? cdata<T>(*b) : nullptr;
        py::gil_scoped_release release;
        conv2d_forward(p, xp, wp, bp, o);
        return out;
    });
}

py::tuple conv2d_backward_py(const py::array& dout, const py::array& x, const py::array& w, index_t sh, index_t sw,
                             index_t ph, index_t pw) {
    const Dtype dt = float_dtype(dout, "dout");
    same_dtype(dt, float_dtype(x, "x"), "conv2d_backward");
    same_dtype(dt, float_dtype(w, "W"), "conv2d_backward");
    const Conv2dParams p = conv_params(x, w, sh, sw, ph, pw);
    expect_shape(dout, {p.n, p.oc, p.oh, p.ow}, "dout");
    return dispatch(dt, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        auto dx = new_array<T>({p.n, p.c, p.h, p.w});
        auto dw = new_array<T>({p.oc, p.c, p.win.kh, p.win.kw});
        auto db = new_array<T>({p.oc});
        T *dxp = dx.mutable_data(), *dwp = dw.mutable_data(), *dbp = db.mutable_data();
        const T *dp = cdata<T>(dout), *xp = cdata<T>(x), *wp = cdata<T>(w);
        {
            py::gil_scoped_release release;
            conv2d_backward(p, dp, xp, wp, dxp, dwp, dbp);
        }
        return py::make_tuple(dx, dw, db);
    });
}

// dx alone (a transposed convolution of dout by W): x is known only by its shape.
py::array conv2d_backward_data_py(const py::array& dout, const py::array& w, const std::vector<index_t>& shape,
                                  index_t sh, index_t sw, index_t ph, index_t pw) {
    const Dtype dt = float_dtype(dout, "dout");
    same_dtype(dt, float_dtype(w, "W"), "conv2d_backward_data");
    if (shape.size() != 4) throw std::invalid_argument("input_shape must have 4 entries (N, C, H, W)");
    expect_ndim(w, 4, "W");
    if (shape[1] != w.shape(1))
        throw std::invalid_argument("channel mismatch: input_shape has C=" + std::to_string(shape[1]) +
                                    " but W expects C=" + std::to_string(w.shape(1)));
    const Conv2dParams p = make_params(shape[0], shape[1], shape[2], shape[3], w.shape(0),
                                       window(w.shape(2), w.shape(3), sh, sw, ph, pw));
    expect_shape(dout, {p.n, p.oc, p.oh, p.ow}, "dout");
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto dx = new_array<T>({p.n, p.c, p.h, p.w});
        T* dxp = dx.mutable_data();
        const T *dp = cdata<T>(dout), *wp = cdata<T>(w);
        py::gil_scoped_release release;
        conv2d_backward<T>(p, dp, nullptr, wp, dxp, nullptr, nullptr);
        return dx;
    });
}

// dW alone: W is known only by its window.
py::array conv2d_backward_weight_py(const py::array& dout, const py::array& x, index_t kh, index_t kw, index_t sh,
                                    index_t sw, index_t ph, index_t pw) {
    const Dtype dt = float_dtype(dout, "dout");
    same_dtype(dt, float_dtype(x, "x"), "conv2d_backward_weight");
    expect_ndim(dout, 4, "dout");
    const Conv2dParams p = image_params(x, dout.shape(1), window(kh, kw, sh, sw, ph, pw));
    expect_shape(dout, {p.n, p.oc, p.oh, p.ow}, "dout");
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto dw = new_array<T>({p.oc, p.c, p.win.kh, p.win.kw});
        T* dwp = dw.mutable_data();
        const T *dp = cdata<T>(dout), *xp = cdata<T>(x);
        py::gil_scoped_release release;
        conv2d_backward<T>(p, dp, xp, nullptr, nullptr, dwp, nullptr);
        return dw;
    });
}

py::dict gemm_plan_dict(const gemm::GemmPlan& g) {
    py::dict d;
    d["m_max"] = g.m_max;
    d["n_max"] = g.n_max;
    d["k_max"] = g.k_max;
    d["kc"] = g.kc;
    d["mc"] = g.mc;
    d["nc"] = g.nc;
    d["scratch_elems"] = g.scratch_elems();
    return d;
}

template <class T>
py::dict conv_plan_dict(const Conv2dParams& p, int threads) {
    const ConvForwardPlan<T> f = plan_conv_forward<T>(p, threads);
    const ConvBackwardPlan<T> b = plan_conv_backward<T>(p, threads);
    py::dict fwd, bwd, d;
    static const char* algorithms[] = {"implicit_gemm", "shifted_rows", "pixel_dots"};
    fwd["algorithm"] = algorithms[static_cast<int>(f.algorithm)];
    fwd["shifted_rows_declined"] = f.shifted_rows_declined;
    fwd["layout"] = f.algorithm == ForwardAlgorithm::shifted_rows ? "row_blocks"
                    : f.algorithm == ForwardAlgorithm::pixel_dots ? "pixel_rows"
                    : f.layout == ForwardLayout::image_tiles      ? "image_tiles"
                                                                  : "batch_chunks";
    fwd["rows"] = f.rows;
    fwd["pitch"] = f.pitch;
    fwd["tiles"] = f.tiles == ShiftedTiles::pixels_by_filters ? "pixels_by_filters" : "filters_by_pixels";
    fwd["output"] = f.rows_in_place ? "rows_in_place" : "block_copy";
    fwd["chunk"] = f.chunk;
    fwd["items"] = f.items;
    fwd["gemm"] = gemm_plan_dict(f.gemm);
    fwd["thread_elems"] = f.thread_elems;
    fwd["shared_elems"] = f.shared_elems;
    fwd["threads"] = f.threads;
    fwd["filter_block"] = f.filter_block;
    bwd["weight_grad"] = b.use_dots ? "dots" : b.use_taps ? "taps" : b.by_columns ? "gemm_columns" : "gemm";
    bwd["taps_block_rows"] = b.taps_block_rows;
    bwd["taps_channel_block"] = b.taps_channel_block;
    bwd["taps_ld"] = b.taps_ld;
    bwd["taps_mr"] = isa::plane_kernels<T>().taps_mr;
    bwd["taps_nr"] = isa::plane_kernels<T>().taps_nr;
    bwd["col_block"] = b.col_block;
    bwd["wgrad_filter_block"] = b.wgrad_filter_block;
    bwd["rows_per_unit"] = b.rows_per_unit;
    bwd["px_per_unit"] = b.px_per_unit;
    bwd["units"] = b.units;
    bwd["groups"] = b.groups;
    bwd["wgrad_gemm"] = gemm_plan_dict(b.wgrad_gemm);
    bwd["c_block"] = b.c_block;
    bwd["oh_chunk"] = b.oh_chunk;
    bwd["dx_row_items"] = b.dx_row_items;
    bwd["dx_row_waves"] = b.dx_row_waves;
    bwd["dx_images"] = b.dx_images;
    bwd["dx_gemm"] = gemm_plan_dict(b.dx_gemm);
    bwd["fused"] = b.fused;
    bwd["data_grad"] = b.dx_as_forward ? "transposed_forward" : b.dx_pixel_rows ? "pixel_rows" : b.dx_one_pixel ? "one_pixel" : "gemm_col2im";
    bwd["dx_col_block"] = b.dx_col_block;
    bwd["thread_elems"] = std::max(b.wgrad_thread_elems, b.dx_thread_elems);
    bwd["threads"] = b.threads;
    d["kernel"] = f.kern->name;
    d["mr"] = f.kern->mr;
    d["nr"] = f.kern->nr;
    d["threads"] = threads;
    d["forward"] = fwd;
    d["backward"] = bwd;
    return d;
}

py::dict conv2d_plan_py(const std::vector<index_t>& x_shape, const std::vector<index_t>& w_shape, index_t sh,
                        index_t sw, index_t ph, index_t pw, const std::string& dtype) {
    if (x_shape.size() != 4 || w_shape.size() != 4)
        throw std::invalid_argument("conv2d_plan: x_shape and w_shape must have 4 entries");
    if (x_shape[1] != w_shape[1])
        throw std::invalid_argument("conv2d_plan: channel mismatch: x has C=" + std::to_string(x_shape[1]) +
                                    " but W expects C=" + std::to_string(w_shape[1]));
    const Conv2dParams p =
        make_params(x_shape[0], x_shape[1], x_shape[2], x_shape[3], w_shape[0],
                    window(w_shape[2], w_shape[3], sh, sw, ph, pw));
    if (dtype == "float32") return conv_plan_dict<float>(p, num_threads());
    if (dtype == "float64") return conv_plan_dict<double>(p, num_threads());
    throw std::invalid_argument("conv2d_plan: dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

}  // namespace

void register_conv(py::module_& m) {
    using namespace pybind11::literals;
    m.def("set_forward_algorithm", &set_forward_algorithm, "name"_a,
          "Force the convolution forward algorithm: 'auto' (the cost rule), 'implicit_gemm', 'shifted_rows' "
          "(stride 1 only; other shapes fall back) or 'pixel_dots'. Tests only.");
    m.def("get_forward_algorithm", &forward_algorithm_setting);
    m.def("set_shifted_rows_tiles", &set_shifted_rows_tiles, "name"_a,
          "Force the shifted-rows GEMM's tiles: 'auto' (the lane rule), 'filters_by_pixels' or "
          "'pixels_by_filters' (the block computed transposed). Tests only.");
    m.def("get_shifted_rows_tiles", &shifted_rows_tiles_setting);
    m.def("set_weight_grad_algorithm", &set_weight_grad_algorithm, "name"_a,
          "Force the convolution weight-gradient algorithm: 'auto' (the cost rule), 'gemm' (in groups or in "
          "column blocks), 'dots' (stride 1 only; other shapes take the GEMM) or 'taps'. Tests only.");
    m.def("get_weight_grad_algorithm", &weight_grad_algorithm_setting);
    m.def("set_data_grad_algorithm", &set_data_grad_algorithm, "name"_a,
          "Force the convolution data-gradient algorithm: 'auto' (the cost rule), 'gemm_col2im', 'pixel_rows' or "
          "'transposed_forward' (stride 1 and padding below the window only; other shapes take gemm_col2im). Tests only.");
    m.def("get_data_grad_algorithm", &data_grad_algorithm_setting);
    m.def(
        "weight_grad_limits",
        [] {
            py::dict d;
            d["taps_block_pixels"] = kTapsBlockPixels;
            d["taps_image_budget_bytes"] = kTapsImageBudgetBytes;
            d["taps_block_taps"] = kTapsBlockTaps;
            d["dots_max_patch"] = kDotsMaxPatch;
            return d;
        },
        "Blocking constants of the weight-gradient paths (tests aim their shapes at them).");
    m.def("im2col", &im2col_py, "x"_a, "kh"_a, "kw"_a, "sh"_a, "sw"_a, "ph"_a, "pw"_a,
          "Book-layout im2col: (N*OH*OW, C*KH*KW), rows (n, oh, ow), columns (c, kh, kw).");
    m.def("col2im", &col2im_py, "col"_a, "input_shape"_a, "kh"_a, "kw"_a, "sh"_a, "sw"_a, "ph"_a, "pw"_a,
          "Adjoint of im2col: sums overlapping columns into an (N, C, H, W) image.");
    m.def("conv2d_forward", &conv2d_forward_py, "x"_a, "w"_a, "b"_a, "sh"_a, "sw"_a, "ph"_a, "pw"_a,
          "Convolution forward (N, OC, OH, OW); b may be None.");
    m.def("conv2d_backward", &conv2d_backward_py, "dout"_a, "x"_a, "w"_a, "sh"_a, "sw"_a, "ph"_a, "pw"_a,
          "Convolution backward: (dx, dW, db).");
    m.def("conv2d_backward_data", &conv2d_backward_data_py, "dout"_a, "w"_a, "input_shape"_a, "sh"_a, "sw"_a,
          "ph"_a, "pw"_a, "Convolution backward, dx alone (a transposed convolution).");
    m.def("conv2d_backward_weight", &conv2d_backward_weight_py, "dout"_a, "x"_a, "kh"_a, "kw"_a, "sh"_a, "sw"_a,
          "ph"_a, "pw"_a, "Convolution backward, dW alone.");
    m.def("conv2d_plan", &conv2d_plan_py, "x_shape"_a, "w_shape"_a, "sh"_a, "sw"_a, "ph"_a, "pw"_a, "dtype"_a,
          "The plans conv2d_forward and conv2d_backward would build for these shapes now (kernel, layout, "
          "blocks, work items, scratch per thread).");
}

}  // namespace fastconv::bind
