/*
 * PowerSGD low-rank compression (private, C-compatible: shared by powersgd.c and a future
 * powersgd_cuda.cu). Vogels, Karimireddy, Jaggi, "PowerSGD: practical low-rank gradient
 * compression for distributed optimization", NeurIPS 2019.
 *
 * Shape. A layer with a shape (params rows x cols, rows * cols == count) is that row-major
 * matrix. A flat layer is reshaped near-square: cols = ceil(sqrt(count)),
 * rows = ceil(count / cols) (so rows <= cols), element e at (e / cols, e % cols); the last
 * row is zero-padded by rows * cols - count < cols virtual zeros that are never stored, sent
 * or written (terse_psgd_shape). A rank r >= min(rows, cols) is refused at create with
 * TERSE_ERR_INVALID: its payload would be at least the matrix itself.
 *
 * Layouts. Factors are stored column by column ("k-major"): P (rows x r) as r columns of
 * rows floats, Q (cols x r) as r columns of cols floats. Payloads use the same layout.
 *
 * "powersgd" (two stages, summable, fp32, no header). Rank i holds M_i = in + residual.
 *   stage 0  (compress)  P_i = M_i Q                     payload rows * r floats
 *   stage 1  (stage)     P^ = orth(sum_i P_i)            identical on every rank
 *                        Q_i = M_i^T P^                  payload cols * r floats
 *                        e_i = M_i - P^ Q_i^T            the residual (local Q_i)
 *   decompress           scale * P^ (sum_i Q_i)^T
 *   warm start           Q <- sum_i Q_i with each column scaled to unit norm (a column of
 *                        norm 0 keeps its previous value). Column scaling does not change
 *                        orth(M Q); it keeps P's magnitude bounded across steps.
 * M_i stays in the residual buffer (or an instance scratch without error feedback) from
 * compress to stage 1, which overwrites it with e_i. sq_err (stage 1) = ||e_i||^2 over the
 * real entries; compress reports ||M_i||^2 provisionally.
 *
 * "powersgd1" (one stage, summable, fp32, no header): half a power iteration per step,
 * alternating sides. The instance keeps a shared factor F (identical on every rank: the
 * previous step's summed payload, or the initial Q).
 *   F is a Q (cols x r):  Q^ = orth(F); send P_i = M_i Q^; e_i = M_i - P_i Q^T;
 *                         decompress scale * (sum_i P_i) Q^T; F <- sum_i P_i (a P)
 *   F is a P (rows x r):  P^ = orth(F); send Q_i = M_i^T P^; e_i = M_i - P^ Q_i^T;
 *                         decompress scale * P^ (sum_i Q_i)^T; F <- sum_i Q_i (a Q)
 * Both reconstructions are projections of the sum M = sum_i M_i onto span(Q^) (rows of M)
 * or span(P^) (columns), and two consecutive steps make one power iteration on slowly
 * changing gradients. The payload is max(rows, cols) * r floats every step (rule 7: a fixed
 * size per plan); a P step leaves (max - rows) * r trailing zeros, a Q step (max - cols) * r.
 * A skipped decompress repeats the same side next step: the side follows F, not a counter.
 *
 * Call order per step: compress, (stage 1,) decompress; decompress may be repeated on the
 * same step with the same bits (the factor kept for the next step is the same); anything
 * else out of order is TERSE_ERR_USAGE.
 *
 * orth() is modified Gram-Schmidt, run twice per column ("twice is enough"), dot products
 * in double with a fixed order: deterministic, so every rank gets the same bits. A column
 * whose norm after projection is <= 1e-6 of its norm before (or 0, or not finite) is
 * replaced by the unit vector e_t maximising 1 - sum_{j<k} a_j[t]^2 (the lowest t on ties),
 * orthogonalised the same way: the basis always has r orthonormal columns.
 *
 * Initial Q (create, reset): element e of the k-major Q (e = k * cols + j) is
 * (u0 + u1 + u2 + u3 - 2) * sqrt(3), u_l = (word l of Philox block e >> 8) * 2^-24, of the
 * stream (params->seed, TERSE_RNG_PSGD_Q, layer, step 0, TERSE_RNG_SHARED): an Irwin-Hall
 * approximation of N(0, 1) without libm, so every rank, CPU or GPU, draws the same bits.
 *
 * State (state_size/get/set, between steps; host instances only). Two uint32 then floats:
 *   word 0  flags: bit 0 set when the kept factor is a P (powersgd1 after a P step)
 *   word 1  len: the kept factor's column length (cols for a Q, rows for a P)
 *   then    the kept factor k-major: r columns of len floats (powersgd: the warm-start Q;
 *           powersgd1: F)
 * So the first c columns of a Q are the first 8 + 4 * c * cols bytes: a rank change keeps
 * columns by copying a prefix (comm/terse.c). state_set takes any such buffer with this
 * instance's r and a len matching its flag (powersgd: a Q only).
 *
 * Non-finite: compress flags it, zeroes the residual and sends NaN. Stage 1 meeting a
 * non-finite summed P sends NaN and zeroes the residual it still holds; decompress meeting a
 * non-finite sum writes NaN over the layer and restores the initial Q. powersgd1 learns of
 * another rank's flag only in decompress, after the residual went back to the caller: the
 * caller resets it, and calls reset() (rule 3), as for every family.
 */
#ifndef TERSE_POWERSGD_H
#define TERSE_POWERSGD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_PSGD_MAX_RANK 1024

/* The matrix shape of a layer (see above). */
static inline void
terse_psgd_shape(size_t count, size_t rows, size_t cols, size_t *rows_p, size_t *cols_p)
{
    size_t c;

    if ((rows > 0) && (cols > 0) && (rows * cols == count)) {
        *rows_p = rows;
        *cols_p = cols;
        return;
    }
    c = (size_t)sqrt((double)count);
    while (c * c < count) {
        ++c;
    }
    while ((c > 1) && ((c - 1) * (c - 1) >= count)) {
        --c;
    }
    c       = (c == 0) ? 1 : c;
    *rows_p = (count + c - 1) / c;
    *cols_p = c;
}

/* Element e of the initial Q (k-major). */
TERSE_HD float
terse_psgd_init_q(const terse_rng_t *rng, uint64_t e)
{
    terse_rng4_t b = terse_rng_block(rng, e);
    const float u  = 1.0f / 16777216.0f;
    float s;

    s = (float)(b.v[0] >> 8) * u + (float)(b.v[1] >> 8) * u;
    s = s + (float)(b.v[2] >> 8) * u;
    s = s + (float)(b.v[3] >> 8) * u;
    return (s - 2.0f) * 1.7320508f;
}

/* The device state of an ops instance of powersgd (the ctx its create returned): the `cuda`
 * argument of powersgd_cuda.h's launchers, e.g. to batch its stage 1 with other layers'
 * (terse__cmp_psgd_cuda_batch_create). Borrowed: owned by the instance. NULL for a host
 * instance (powersgd1 is one always), and in a build without CUDA. Defined in powersgd.c. */
void *terse__cmp_psgd_cuda_of(void *cmp);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_POWERSGD_H */
