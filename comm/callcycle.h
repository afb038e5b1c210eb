/*
 * The per-step call cycle of a shim (DESIGN.md sections 3 and 8, rule 1), and the verdict of
 * a shim's configuration agreement: what libterse-mpi.so and libterse-nccl.so share.
 *
 * A training step issues the same sequence of gradient allreduces every step: DDP's buckets,
 * a C trainer's layers. A shim sees only a stream of calls, so it learns that sequence: every
 * qualifying call (large enough, a compressible type and op) gives a key of rank-invariant
 * facts (count, datatype, op: never a pointer), and the cycle locks at the shortest period P
 * whose last TERSE_MPI_CYCLE_RECUR + 1 repetitions are equal. From then on a call's place in
 * the cycle (0 .. P-1) names its terse slot on every rank alike. A call that does not match
 * the key expected at its place breaks the cycle and learning goes on over the whole history.
 *
 * A run of equal keys inside the true cycle (twenty equal DDP buckets of a transformer's
 * identical layers) looks like a short cycle and locks one. Its break proves that nothing
 * fitting inside that run is the cycle, so the next lock needs a periodic window longer than
 * the run (at most 4 times the broken lock's window, so that a one-off call breaking a real,
 * long-held cycle delays its next lock by a few rounds, not forever; the window never shrinks
 * and is capped at half the history). Within a few steps the true cycle locks.
 *
 * Pure bookkeeping: no locking (the shim holds its communicator's mutex), no communication,
 * no logging beyond INFO/WARN lines about locks and breaks.
 *
 *     terse_cycle_t cy;
 *     terse__cycle_init(&cy, recur);
 *     switch (terse__cycle_feed(&cy, terse__cycle_key(count, dtype, op), &place)) {
 *     case TERSE_CYCLE_LEARNING: pass through;
 *     case TERSE_CYCLE_BROKEN:   drop per-place state; pass through;
 *     case TERSE_CYCLE_LOCKED:
 *     case TERSE_CYCLE_IN:       compress as slot `place`;
 *     }
 *     terse__cycle_free(&cy);
 */
#ifndef TERSE_CALLCYCLE_H
#define TERSE_CALLCYCLE_H

#include <stddef.h>
#include <stdint.h>

#include "terse.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_CYCLE_HIST_MAX 4096 /* keys remembered while learning (older half dropped) */

typedef enum terse_cycle_event {
    TERSE_CYCLE_LEARNING = 0, /* no cycle yet: the call passes through */
    TERSE_CYCLE_LOCKED,       /* the cycle locked at this call, the last place of the cycle */
    TERSE_CYCLE_IN,           /* the call matched its place in the locked cycle */
    TERSE_CYCLE_BROKEN        /* the call did not match: cycle dropped, learning restarted */
} terse_cycle_event_t;

typedef struct terse_cycle {
    size_t    recur;   /* repetitions after the first that lock a period (>= 1) */
    uint64_t *hist;    /* owned; the latest keys (TERSE_CYCLE_HIST_MAX) */
    size_t    nhist;
    size_t    wmin;    /* a lock needs a periodic window of at least this many calls */
    size_t    window;  /* the window the current lock was found on */
    size_t    held;    /* calls matched since the lock */
    size_t    period;  /* 0: not locked */
    uint64_t *keys;    /* owned; period keys of the locked cycle */
    size_t    pos;     /* place of the next call */
    uint64_t  cycles;  /* complete cycles since the lock */
} terse_cycle_t;

/* The key of a call: rank-invariant facts only. dtype and op are the caller's small codes
 * (each < 256). */
static inline uint64_t
terse__cycle_key(size_t count, unsigned dtype, unsigned op)
{
    return ((uint64_t)count << 16) ^ ((uint64_t)(dtype & 0xffu) << 8) ^ (uint64_t)(op & 0xffu);
}

/* Starts empty; recur < 1 is taken as 1. Nothing is allocated until the first feed. */
void terse__cycle_init(terse_cycle_t *cy, size_t recur);
/* Frees what cy holds and leaves it empty (safe to call twice). */
void terse__cycle_free(terse_cycle_t *cy);
/* Drops the locked cycle and the history (the caller's per-place state is gone too). */
void terse__cycle_reset(terse_cycle_t *cy);

/* Feeds the key of one qualifying call.
 *   [out] place_p  the call's place (0 .. period-1) for LOCKED and IN; untouched otherwise
 * Returns the event (see terse_cycle_event_t). A BROKEN call passes through even when the
 * history locks a new cycle at it (its next call is then place 0). Out of memory (32 KiB of
 * history, or the cycle's keys) keeps learning: the call passes through (LEARNING). */
terse_cycle_event_t terse__cycle_feed(terse_cycle_t *cy, uint64_t key, size_t *place_p);

/* ---------------------------------------------------------------- configuration agreement */
/* Rule 1 for the configuration: at the first candidate call on a communicator every rank
 * reduces (MAX, collectively, over the user's communicator) three words: the hash of its
 * TERSE_* values, its complement, and an invalid-value flag. Equal hashes give equal maxima;
 * any difference shows in one of the two. */
typedef enum terse_shim_verdict {
    TERSE_SHIM_VERDICT_ON = 0, /* compress what qualifies */
    TERSE_SHIM_VERDICT_OFF,    /* pass everything through (settings differ, TERSE_SHIM=0) */
    TERSE_SHIM_VERDICT_BADCFG  /* some rank has an invalid value: candidate calls fail */
} terse_shim_verdict_t;

typedef struct terse_shim_agree {
    terse_status_t st;   /* terse_init() on this rank */
    uint64_t       hash; /* this rank's configuration hash (0 when invalid) */
    uint64_t       v[3]; /* the words to reduce with MAX, in place */
} terse_shim_agree_t;

/* Fills a->v with this rank's words. */
void terse__shim_agree_begin(terse_shim_agree_t *a);
/* The verdict from the reduced words, logged once on this rank: `call` names the interposed
 * function, `fails_with` what it returns for an invalid value (e.g. "MPI_ERR_ARG"). */
terse_shim_verdict_t terse__shim_agree_end(const terse_shim_agree_t *a, const char *call,
                                           const char *fails_with);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_CALLCYCLE_H */
