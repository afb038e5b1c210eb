/*
 * The per-step call cycle and the configuration agreement verdict of the shims: see
 * callcycle.h.
 */
#include "callcycle.h"

#include <stdlib.h>
#include <string.h>

#include "terse_base.h"
#include "terse_internal.h" /* terse__config_hash */

void
terse__cycle_init(terse_cycle_t *cy, size_t recur)
{
    memset(cy, 0, sizeof(*cy));
    cy->recur = (recur < 1) ? 1 : recur;
}

void
terse__cycle_free(terse_cycle_t *cy)
{
    size_t recur = cy->recur;

    free(cy->hist);
    free(cy->keys);
    terse__cycle_init(cy, recur);
}

void
terse__cycle_reset(terse_cycle_t *cy)
{
    free(cy->keys);
    cy->keys   = NULL;
    cy->nhist  = 0;
    cy->wmin   = 0;
    cy->window = 0;
    cy->held   = 0;
    cy->period = 0;
    cy->pos    = 0;
    cy->cycles = 0;
}

/* Appends key to the history (every fed call: a break learns from what came before it). */
static int
cycle_append(terse_cycle_t *cy, uint64_t key)
{
    if (cy->hist == NULL) {
        cy->hist = malloc(TERSE_CYCLE_HIST_MAX * sizeof(uint64_t));
        if (cy->hist == NULL) {
            return 0;
        }
    }
    if (cy->nhist == TERSE_CYCLE_HIST_MAX) {
        /* forget the older half: the same on every rank */
        memmove(cy->hist, cy->hist + TERSE_CYCLE_HIST_MAX / 2,
                (TERSE_CYCLE_HIST_MAX / 2) * sizeof(uint64_t));
        cy->nhist = TERSE_CYCLE_HIST_MAX / 2;
    }
    cy->hist[cy->nhist++] = key;
    return 1;
}

/* Tries to lock the shortest period P whose last max((recur + 1) P, wmin) keys are periodic
 * with period P (the newest key closes the cycle). Returns 1 when locked. */
static int
cycle_try_lock(terse_cycle_t *cy)
{
    const size_t n = cy->nhist;
    size_t P, i, w;
    uint64_t *keys;

    for (P = 1; (cy->recur + 1) * P <= n; ++P) {
        w = TERSE_MAX((cy->recur + 1) * P, cy->wmin);
        if (w > n) {
            break; /* w grows with P */
        }
        for (i = 0; i + P < w; ++i) {
            if (cy->hist[n - 1 - i] != cy->hist[n - 1 - i - P]) {
                break;
            }
        }
        if (i + P < w) {
            continue;
        }
        keys = malloc(P * sizeof(uint64_t));
        if (keys == NULL) {
            return 0;
        }
        memcpy(keys, cy->hist + n - P, P * sizeof(uint64_t));
        free(cy->keys);
        cy->keys   = keys;
        cy->period = P;
        cy->window = w;
        cy->held   = 0;
        cy->pos    = 0; /* the newest call was the last place of the cycle */
        cy->cycles = 0;
        terse_info(TERSE_LOG_SHIM, "call cycle of %zu allreduces locked", P);
        return 1;
    }
    return 0;
}

terse_cycle_event_t
terse__cycle_feed(terse_cycle_t *cy, uint64_t key, size_t *place_p)
{
    int stored = cycle_append(cy, key);

    if (cy->period > 0) {
        if (cy->keys[cy->pos] == key) {
            *place_p = cy->pos;
            cy->pos  = (cy->pos + 1) % cy->period;
            cy->held++;
            if (cy->pos == 0) {
                cy->cycles++;
            }
            return TERSE_CYCLE_IN;
        }
        terse_warn(TERSE_LOG_SHIM, "the allreduce call cycle changed (place %zu of %zu): "
                   "passing through until it recurs again", cy->pos, cy->period);
        /* nothing inside the run that fed this lock is the cycle: the next lock needs a longer
         * window, at most 4 times this one's (so a one-off call breaking a real cycle delays
         * its next lock by a bounded number of calls; repeated breaks reach the history cap) */
        cy->wmin = TERSE_MIN(TERSE_MIN(cy->window + cy->held + 1, 4 * cy->window + 1),
                             (size_t)TERSE_CYCLE_HIST_MAX / 2);
        free(cy->keys);
        cy->keys   = NULL;
        cy->period = 0;
        cy->pos    = 0;
        cy->cycles = 0;
        cy->held   = 0;
        if (stored) {
            (void)cycle_try_lock(cy);
        }
        return TERSE_CYCLE_BROKEN;
    }
    if (!stored || !cycle_try_lock(cy)) {
        return TERSE_CYCLE_LEARNING;
    }
    *place_p = cy->period - 1;
    return TERSE_CYCLE_LOCKED;
}

/* ---------------------------------------------------------------- configuration agreement */
void
terse__shim_agree_begin(terse_shim_agree_t *a)
{
    a->st   = terse_init();
    a->hash = (a->st == TERSE_OK) ? terse__config_hash(terse__config()) : 0;
    a->v[0] = a->hash;
    a->v[1] = ~a->hash;
    a->v[2] = (a->st == TERSE_OK) ? 0 : 1;
}

terse_shim_verdict_t
terse__shim_agree_end(const terse_shim_agree_t *a, const char *call, const char *fails_with)
{
    if (a->v[2] != 0) {
        terse_error(TERSE_LOG_SHIM, "%s an invalid TERSE_* value (see the error above on that "
                    "rank): %s fails with %s",
                    (a->st == TERSE_OK) ? "another rank has" : "this rank has", call, fails_with);
        return TERSE_SHIM_VERDICT_BADCFG;
    }
    if ((a->v[0] != a->hash) || (a->v[1] != ~a->hash)) {
        terse_warn(TERSE_LOG_SHIM, "ranks have different TERSE_* settings: every rank passes "
                   "%s through uncompressed", call);
        return TERSE_SHIM_VERDICT_OFF;
    }
    if (!terse__config()->SHIM) {
        terse_info(TERSE_LOG_SHIM, "TERSE_SHIM is 0: passing every call through");
        return TERSE_SHIM_VERDICT_OFF;
    }
    return TERSE_SHIM_VERDICT_ON;
}
