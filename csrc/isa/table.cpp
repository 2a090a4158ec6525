#include <atomic>
#include <stdexcept>

#include "isa/isa.hpp"

namespace fastconv::isa {

namespace {
template <class T>
void check_blocking(const Family& family) {
    for (const auto& k : family.kernels<T>().gemm)
        if (k.nr > gemm::kMaxNr || k.mr > gemm::kMaxMr || k.mc % k.mr != 0 || k.nc % k.nr != 0)
            throw std::logic_error(std::string("GEMM kernel ") + k.name + " has inconsistent blocking");
}

std::vector<Family> build_table() {
    std::vector<Family> table;
    for (const Family* family : {avx512_family(), avx2_family(), generic_family()})
        if (family) table.push_back(*family);
    for (const Family& family : table) {
        if (family.f32.gemm.empty() || family.f64.gemm.empty())
            throw std::logic_error(std::string("ISA family ") + family.name + " has no GEMM kernel");
        check_blocking<float>(family);
        check_blocking<double>(family);
    }
    return table;
}

// Index of the forced family in families(), or -1 for "auto".
std::atomic<int> g_forced{-1};

int find(const std::string& name) {
    const auto& table = families();
    for (std::size_t i = 0; i < table.size(); ++i)
        if (name == table[i].name) return int(i);
    return -1;
}

std::string choices() {
    std::string out = "auto";
    for (const Family& family : families()) out += std::string(", ") + family.name;
    return out;
}
}  // namespace

const std::vector<Family>& families() {
    static const std::vector<Family> table = build_table();
    return table;
}

void select(const std::string& family) {
    if (family == "auto") {
        g_forced.store(-1);
        return;
    }
    const int i = find(family);
    if (i < 0) throw std::invalid_argument("unknown ISA '" + family + "'; choose " + choices());
    if (!families()[i].cpu_has()) throw std::invalid_argument("ISA '" + family + "' is not supported by this CPU");
    g_forced.store(i);
}

std::string selected() {
    const int i = g_forced.load();
    return i < 0 ? "auto" : families()[i].name;
}

const Family& active() {
    static const int best = [] {
        const auto& table = families();
        for (std::size_t i = 0; i < table.size(); ++i)
            if (table[i].cpu_has()) return int(i);
        return int(table.size()) - 1;
    }();
    const int forced = g_forced.load(std::memory_order_relaxed);
    return families()[forced < 0 ? best : forced];
}

}  // namespace fastconv::isa
