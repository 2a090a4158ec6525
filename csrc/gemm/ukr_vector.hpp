// One register-blocked micro-kernel written with GCC/Clang vector extensions, so that the
// same source becomes SSE2, AVX2 or AVX-512 code depending on the flags of the translation
// unit that instantiates it (each per-ISA .cpp is compiled with its own -m flags).
#pragma once

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "kernel.hpp"

namespace fastconv::gemm {

#if defined(__GNUC__)
#define FASTCONV_HAVE_VECTOR_EXT 1

// MR rows x NV vectors of VBYTES each.
template <class T, int MR, int NV, int VBYTES>
struct VectorTile {
    typedef T V __attribute__((vector_size(VBYTES)));
    static constexpr int L = VBYTES / int(sizeof(T));
    static constexpr int NR = NV * L;
    // tile_columns runs an edge of n columns on ceil(n / L) vectors, as MicroKernel::lanes
    // promises the planners (what a tile computes and reads), only up to three vectors a tile.
    static_assert(NV >= 1 && NV <= 3, "a wider tile needs tile_columns to run its edges on ceil(n / L) vectors");

    static V load(const T* p) {
        V v;
        std::memcpy(&v, p, sizeof(V));
        return v;
    }
    static void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
    // Not `V{} + s`: 0 + s is not an identity for s = -0.0, so the compiler keeps the add.
    static V splat(T s) {
#if defined(__AVX512F__)
        if constexpr (VBYTES == 64 && sizeof(T) == 4) return reinterpret_cast<V>(_mm512_set1_ps(s));
        if constexpr (VBYTES == 64 && sizeof(T) == 8) return reinterpret_cast<V>(_mm512_set1_pd(s));
#endif
#if defined(__AVX__)
        if constexpr (VBYTES == 32 && sizeof(T) == 4) return reinterpret_cast<V>(_mm256_set1_ps(s));
        if constexpr (VBYTES == 32 && sizeof(T) == 8) return reinterpret_cast<V>(_mm256_set1_pd(s));
#endif
        V v;
#pragma GCC unroll 16
        for (int l = 0; l < L; ++l) v[l] = s;
        return v;
    }

    // Where row p of the B panel starts: packed (aligned, NR apart), rows of a matrix read in
    // place, or rows gathered through a table (the shifted-rows forward's taps).
    struct PackedRows {
        const T* b;
        const T* row(index_t p) const { return static_cast<const T*>(__builtin_assume_aligned(b + p * NR, 64)); }
    };
    struct StridedRows {
        const T* b;
        index_t ldb;
        const T* row(index_t p) const { return b + p * ldb; }
    };
    struct GatheredRows {
        const T* const* rows;
        index_t col;
        const T* row(index_t p) const { return rows[p] + col; }
    };

    // A: a packed MR-row panel, or MR rows of a matrix read in place (rows past m repeat row
    // m - 1, so nothing past the matrix is read; their sums are never stored).
    struct PackedA {
        const T* a;
        T at(index_t p, int i) const { return static_cast<const T*>(__builtin_assume_aligned(a, 64))[p * MR + i]; }
    };
    struct RowsA {
        const T* rows[MR];
        RowsA(const T* a, index_t lda, int m) {
            for (int i = 0; i < MR; ++i) rows[i] = a + (i < m ? i : m - 1) * lda;
        }
        T at(index_t p, int i) const { return rows[i][p]; }
    };

    static void run(index_t k, const T* __restrict a, const T* __restrict b, T* __restrict c, index_t ldc,
                    int m, int n, bool accumulate, const T* __restrict bias) {
        tile_columns(k, PackedA{a}, PackedRows{b}, c, ldc, m, n, accumulate, bias);
    }
    static void run_b_rows(index_t k, const T* __restrict a, const T* __restrict b, index_t ldb, T* __restrict c,
                           index_t ldc, int m, int n, bool accumulate, const T* __restrict bias) {
        tile_columns(k, PackedA{a}, StridedRows{b, ldb}, c, ldc, m, n, accumulate, bias);
    }
    static void run_b_gather(index_t k, const T* __restrict a, index_t lda, const T* const* b_rows, index_t col,
                             T* __restrict c, index_t ldc, int m, int n, bool accumulate, const T* __restrict bias) {
        if (lda == 0)
            tile_columns(k, PackedA{a}, GatheredRows{b_rows, col}, c, ldc, m, n, accumulate, bias);
        else
            tile_columns(k, RowsA(a, lda, m), GatheredRows{b_rows, col}, c, ldc, m, n, accumulate, bias);
    }

    // A tile of n <= NR columns computes only the vectors that hold them: a 49-pixel plane's
    // last 16-wide panel has one column, which at full width cost a whole tile's FMAs.
    template <class A, class Rows>
    static void tile_columns(index_t k, A a, Rows b, T* __restrict c, index_t ldc, int m, int n, bool accumulate,
                             const T* __restrict bias) {
        if constexpr (NV > 1)
            if (n <= L) return tile<1>(k, a, b, c, ldc, m, n, accumulate, bias);
        if constexpr (NV > 2)
            if (n <= 2 * L) return tile<2>(k, a, b, c, ldc, m, n, accumulate, bias);
        tile<NV>(k, a, b, c, ldc, m, n, accumulate, bias);
    }

    // The MR x (NA vectors) tile of C.
    template <int NA, class A, class Rows>
    static void tile(index_t k, A a, Rows b, T* __restrict c, index_t ldc, int m, int n, bool accumulate,
                     const T* __restrict bias) {
        constexpr int W = NA * L;
        // C is touched only after the k loop: start its lines on their way now, so the
        // stores at the end do not wait on misses.
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) {
            __builtin_prefetch(c + i * ldc, 1);
            __builtin_prefetch(c + i * ldc + W - 1, 1);
        }
        V acc[MR][NA];
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
            for (int j = 0; j < NA; ++j) acc[i][j] = V{};

        for (index_t p = 0; p < k; ++p) {
            const T* __restrict b_row = b.row(p);
            V bj[NA];
#pragma GCC unroll 8
            for (int j = 0; j < NA; ++j) bj[j] = load(b_row + j * L);
#pragma GCC unroll 32
            for (int i = 0; i < MR; ++i) {
                const V ai = splat(a.at(p, i));
#pragma GCC unroll 8
                for (int j = 0; j < NA; ++j) acc[i][j] += ai * bj[j];
            }
        }

        if (m == MR && n == W) {
#pragma GCC unroll 32
            for (int i = 0; i < MR; ++i) {
                T* row = c + i * ldc;
                const V shift = splat(bias ? bias[i] : T(0));
#pragma GCC unroll 8
                for (int j = 0; j < NA; ++j) {
                    V v = acc[i][j] + shift;
                    if (accumulate) v += load(row + j * L);
                    store(row + j * L, v);
                }
            }
            return;
        }
        // Edge tile: spill, then write only the valid part.
        alignas(64) T tile[MR][W];
        std::memcpy(tile, acc, sizeof(tile));
        for (int i = 0; i < m; ++i) {
            T* row = c + i * ldc;
            const T shift = bias ? bias[i] : T(0);
            for (int j = 0; j < n; ++j) row[j] = (accumulate ? row[j] : T(0)) + tile[i][j] + shift;
        }
    }
};
#endif

// Plain C++ fallback for compilers without vector extensions (MSVC).
template <class T, int MR, int NR>
struct ScalarTile {
    static void run(index_t k, const T* __restrict a, const T* __restrict b, T* __restrict c, index_t ldc,
                    int m, int n, bool accumulate, const T* __restrict bias) {
        run_b_rows(k, a, b, NR, c, ldc, m, n, accumulate, bias);
    }
    static void run_b_rows(index_t k, const T* __restrict a, const T* __restrict b, index_t ldb, T* __restrict c,
                           index_t ldc, int m, int n, bool accumulate, const T* __restrict bias) {
        T acc[MR][NR] = {};
        for (index_t p = 0; p < k; ++p)
            for (int i = 0; i < MR; ++i)
                for (int j = 0; j < NR; ++j) acc[i][j] += a[p * MR + i] * b[p * ldb + j];
        store(acc, c, ldc, m, n, accumulate, bias);
    }
    static void run_b_gather(index_t k, const T* __restrict a, index_t lda, const T* const* b_rows, index_t col,
                             T* __restrict c, index_t ldc, int m, int n, bool accumulate, const T* __restrict bias) {
        T acc[MR][NR] = {};
        for (index_t p = 0; p < k; ++p)
            for (int i = 0; i < MR; ++i) {
                const T ai = lda == 0 ? a[p * MR + i] : a[(i < m ? i : m - 1) * lda + p];
                for (int j = 0; j < NR; ++j) acc[i][j] += ai * b_rows[p][col + j];
            }
        store(acc, c, ldc, m, n, accumulate, bias);
    }
    static void store(const T (&acc)[MR][NR], T* __restrict c, index_t ldc, int m, int n, bool accumulate,
                      const T* __restrict bias) {
        for (int i = 0; i < m; ++i)
            for (int j = 0; j < n; ++j)
                c[i * ldc + j] = (accumulate ? c[i * ldc + j] : T(0)) + acc[i][j] + (bias ? bias[i] : T(0));
    }
};

}  // namespace fastconv::gemm
