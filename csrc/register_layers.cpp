// Bindings for the dense layers and the optimisers: the rest of the book's common/layers.py
// and common/optimizer.py on fastconv's threads.
#include <string>

#include "bind_util.hpp"
#include "dense.hpp"
#include "optimizer.hpp"

namespace fastconv::bind {

namespace {

// The dtype of x (N, D) and W (D, H), which every other operand must share, and (N, D, H).
struct AffineDims {
    Dtype dt;
    index_t N, D, H;
};

AffineDims affine_dims(const py::array& x, const py::array& w, const char* what) {
    const Dtype dt = float_dtype(x, "x");
    same_dtype(dt, float_dtype(w, "W"), what);
    expect_ndim(x, 2, "x");
    expect_ndim(w, 2, "W");
    const AffineDims d{dt, x.shape(0), x.shape(1), w.shape(1)};
    expect_shape(w, {d.D, d.H}, "W");
    return d;
}

// (x (N, D), W (D, H), b (H,)) -> x . W + b.
py::array affine_forward_py(const py::array& x, const py::array& w, const py::array& b) {
    // Plain copies, not a structured binding: C++17 lambdas (the dispatch below) cannot capture those.
    const AffineDims dims = affine_dims(x, w, "affine");
    const Dtype dt = dims.dt;
    const index_t N = dims.N, D = dims.D, H = dims.H;
    same_dtype(dt, float_dtype(b, "b"), "affine");
    expect_shape(b, {H}, "b");
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto out = new_array<T>({N, H});
        T* op = out.mutable_data();
        py::gil_scoped_release release;
        affine_forward<T>(N, D, H, cdata<T>(x), cdata<T>(w), cdata<T>(b), op);
        return out;
    });
}

// (dout (N, H), x (N, D), W (D, H)) -> (dx, dW, db).
py::tuple affine_backward_py(const py::array& dout, const py::array& x, const py::array& w) {
    const AffineDims dims = affine_dims(x, w, "affine_backward");
    const Dtype dt = dims.dt;
    const index_t N = dims.N, D = dims.D, H = dims.H;
    same_dtype(dt, float_dtype(dout, "dout"), "affine_backward");
    expect_shape(dout, {N, H}, "dout");
    return dispatch(dt, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        auto dx = new_array<T>({N, D});
        auto dw = new_array<T>({D, H});
        auto db = new_array<T>({H});
        T *dxp = dx.mutable_data(), *dwp = dw.mutable_data(), *dbp = db.mutable_data();
        {
            py::gil_scoped_release release;
            affine_backward<T>(N, D, H, cdata<T>(dout), cdata<T>(x), cdata<T>(w), dxp, dwp, dbp);
        }
        return py::make_tuple(dx, dw, db);
    });
}

OptimizerRule rule_named(const std::string& name) {
    if (name == "sgd") return OptimizerRule::sgd;
    if (name == "momentum") return OptimizerRule::momentum;
    if (name == "nesterov") return OptimizerRule::nesterov;
    if (name == "adagrad") return OptimizerRule::adagrad;
    if (name == "rmsprop") return OptimizerRule::rmsprop;
    if (name == "adam") return OptimizerRule::adam;
    throw std::invalid_argument("optimizer_update: unknown rule '" + name + "'");
}

int state_arrays(OptimizerRule rule) {
    return rule == OptimizerRule::sgd ? 0 : rule == OptimizerRule::adam ? 2 : 1;
}

// One rule's update of `param` in place; `state` holds the rule's arrays (v, h, or Adam's m, v),
// each of param's shape and dtype, updated in place too.
void optimizer_update_py(const std::string& name, py::array& param, const py::array& grad, py::list state,
                         double lr, double momentum, double decay_rate, double beta1, double beta2) {
    const OptimizerStep step{rule_named(name), lr, momentum, decay_rate, beta1, beta2};
    const Dtype dt = float_dtype(param, "param");
    check_writable_like(param, param, "param");
    same_dtype(dt, float_dtype(grad, "grad"), "optimizer_update");
    expect_shape(grad, full_shape(param), "grad");
    const int n_state = state_arrays(step.rule);
    if (static_cast<int>(state.size()) != n_state)
        throw std::invalid_argument("optimizer_update: '" + name + "' takes " + std::to_string(n_state) +
                                    " state arrays");
    std::vector<py::array> arrays;
    for (auto item : state) {
        arrays.push_back(py::reinterpret_borrow<py::array>(item));
        same_dtype(dt, float_dtype(arrays.back(), "state"), "optimizer_update");
        check_writable_like(arrays.back(), param, "state");
    }
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        T* s1 = n_state > 0 ? static_cast<T*>(arrays[0].mutable_data()) : nullptr;
        T* s2 = n_state > 1 ? static_cast<T*>(arrays[1].mutable_data()) : nullptr;
        T* p = static_cast<T*>(param.mutable_data());
        const T* g = cdata<T>(grad);
        const index_t n = param.size();
        py::gil_scoped_release release;
        optimizer_update<T>(step, n, p, g, s1, s2);
    });
}

}  // namespace

void register_layers(py::module_& m) {
    using namespace pybind11::literals;
    m.def("affine_forward", &affine_forward_py, "x"_a, "W"_a, "b"_a,
          "The book's Affine.forward on 2-D x: x @ W + b on fastconv's GEMM.");
    m.def("affine_backward", &affine_backward_py, "dout"_a, "x"_a, "W"_a,
          "The book's Affine.backward: (dout @ W.T, x.T @ dout, dout.sum(axis=0)).");
    m.def("optimizer_update", &optimizer_update_py, "rule"_a, "param"_a, "grad"_a, "state"_a, "lr"_a,
          "momentum"_a = 0.9, "decay_rate"_a = 0.99, "beta1"_a = 0.9, "beta2"_a = 0.999,
          "One in-place pass of a book optimiser's update (sgd, momentum, nesterov, adagrad, rmsprop, adam; "
          "for adam, lr is the bias-corrected lr_t).");
}

}  // namespace fastconv::bind
