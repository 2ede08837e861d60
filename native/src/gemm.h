// out = x · Wᵀ (+ bias) for a block of weight rows, with the core's fixed reduction order: every
// output is 8 FMA lanes over k, reduced as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), then the tail in
// order — the same bits as simd::dot, whichever ISA runs and however rows are split across threads.
#pragma once

#include <cstdint>

namespace lm::gemm {

// True when this CPU has AVX-512 F/DQ/VL (checked once) and SIMD is enabled.
bool avx512_active();
// Whether prefill-sized batches use packed panels (default on). Same bits either way; benchmarks
// and tests switch it to compare the two paths.
void set_packed(bool on);
// Software prefetch in the LoRA tiles: short rows (the expand) fetch the tiles two ahead (AVX2 and
// AVX-512), long rows at one input (the shrink, AVX-512) use the decode GEMV's tile; on by default,
// LORAMESH_LORA_PREFETCH=0 turns it off (the benchmark's before/after). Same bits either way.
void set_prefetch(bool on);
// The AVX-512 short-row (LoRA expand) prefetch's reach: off (default) 2 tiles ahead into L1, on
// 8 tiles ahead into L2 (LORAMESH_LORA_PREFETCH_FAR=1; not shown to win a step). Same bits.
void set_short_prefetch_far(bool on);
// The one-token expand on bf16 B in 16-row tiles that load whole 64-byte lines (AVX-512 BW; on by
// default, LORAMESH_LORA_EXPAND16=0 turns it off, =alt switches it at every one-token step). Same
// bits as the 8-row tile.
void set_expand16(bool on);
// That tile's loads `pairs` row pairs (1, 2 or 4) at a time over all their lines instead of every
// pair per line (0, this library's default). The engine (ops_cpu.cpp) sets 1 unless
// LORAMESH_LORA_EXPAND_GROUPED=N says otherwise (=alt[:N] switches 0 and 1 [N] per one-token step). Same bits.
void set_expand_grouped(int pairs);
// Software prefetch (into L2, 2 KB ahead per row) in the AVX-512 one-token GEMV; on by default,
// LORAMESH_GEMV_PREFETCH=0 turns it off. Same bits either way.
void set_gemv_prefetch(bool on);
// That prefetch's distance in bytes ahead per row (default 2048, rounded down to whole lines); at
// K = 2048 bf16 (4 KB rows) 4096 fetches the next tile's rows from the tile's first line. Also the
// one-input shrink's tile. Same bits at any distance. LORAMESH_GEMV_PREFETCH_BYTES=N sets it,
// =alt:N switches between 2048 and N at every one-token step (ops_cpu.cpp).
void set_gemv_prefetch_bytes(int64_t bytes);
// That prefetch in address order instead: during each tile, the next tile's 8 rows (one contiguous
// block, 32 KB at K = 2048 bf16), 8 lines a line step; a claim's first tile starts cold. Same bits.
// On by default (the engine's ops_cpu.cpp sets it); LORAMESH_GEMV_PREFETCH_SEQ=0 turns it off, =alt
// switches it at every one-token step.
void set_gemv_prefetch_seq(bool on);
// The bf16 decode tile widened by in-lane unpacks instead of vpmovzxwd + shift (AVX-512 BW; same
// bits). On by default (the engine's ops_cpu.cpp sets it); LORAMESH_GEMV_UNPACK=0 off, =alt switched
// at every one-token step.
void set_gemv_unpack(bool on);
// Rows a tile of the one-token bf16 GEMV (AVX-512): 8 (the tile above), 4 or 2, each output with
// the 8-row tile's lanes, FMA order and reduction, so the same bits; 4 and 2 prefetch the block about
// 16 KB ahead in address order, and 4 takes the unpack widening when set_gemv_unpack is on. The
// engine's default is 4 (ops_cpu.cpp; this file's own default 8); LORAMESH_GEMV_TILE=N sets it,
// =alt:N switches between 8 (variant 0) and N at every one-token step.
void set_gemv_tile(int rows);

// Rows [row_begin, row_end) of out[tokens, n] for f32 (uint16_t: bf16) weights w[n, k].
void matmul_rows(const float* x, const float* w, const float* bias, int64_t tokens, int64_t k, int64_t n,
                 int64_t row_begin, int64_t row_end, float* out);
void matmul_rows(const float* x, const uint16_t* w, const float* bias, int64_t tokens, int64_t k, int64_t n,
                 int64_t row_begin, int64_t row_end, float* out);

// The same products for inputs given as row pointers (the LoRA kernels' gathered rows):
// out[t * out_stride + (j - row_begin)] = xs[t] · w[j] for j in [row_begin, row_end). Same bits as above.
void matmul_rows_ptr(const float* const* xs, const float* w, int64_t tokens, int64_t k, int64_t row_begin,
                     int64_t row_end, float* out, int64_t out_stride);
void matmul_rows_ptr(const float* const* xs, const uint16_t* w, int64_t tokens, int64_t k, int64_t row_begin,
                     int64_t row_end, float* out, int64_t out_stride);

// The LoRA expand on a k-major B (Bᵀ stored [k, n_total]): for n in [col_begin, col_end),
// out[t * out_stride + (n - col_begin)] = Σ_j hs[t][j] · bt[j * n_total + n], summed j = 0 .. k-1 in
// order with one fused multiply-add each, from 0. So an output's bits depend on neither the column
// split, nor the number of inputs, nor the ISA (AVX2 or scalar). Bᵀ's rows are read as runs of
// `col_end - col_begin` elements, four rows at a time, each loaded vector serving two inputs.
void matmul_kmajor(const float* const* hs, const float* bt, int64_t tokens, int64_t k, int64_t n_total,
                   int64_t col_begin, int64_t col_end, float* out, int64_t out_stride);
void matmul_kmajor(const float* const* hs, const uint16_t* bt, int64_t tokens, int64_t k, int64_t n_total,
                   int64_t col_begin, int64_t col_end, float* out, int64_t out_stride);

}  // namespace lm::gemm
