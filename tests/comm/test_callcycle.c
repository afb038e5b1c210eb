/* comm/callcycle: the shims' per-step call cycle (learning, locking, places, breaks, runs of
 * equal keys inside a longer cycle), checked against what the fed stream really is. */
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "callcycle.h"
#include "terse_base.h"

static int
quiet_begin(void)
{
    int saved = terse__log_level;

    terse__log_level = -1; /* breaks warn by design; keep the output readable */
    return saved;
}

/* Feeds keys[0..n) and records the events and places. */
static void
feed_all(terse_cycle_t *cy, const uint64_t *keys, size_t n, terse_cycle_event_t *ev,
         size_t *place)
{
    size_t i;

    for (i = 0; i < n; ++i) {
        place[i] = (size_t)-1;
        ev[i]    = terse__cycle_feed(cy, keys[i], &place[i]);
    }
}

/* The stream `steps` repetitions of cycle[0..P). */
static uint64_t *
make_stream(const uint64_t *cycle, size_t P, size_t steps)
{
    uint64_t *s = malloc(P * steps * sizeof(*s));
    size_t i;

    for (i = 0; (s != NULL) && (i < P * steps); ++i) {
        s[i] = cycle[i % P];
    }
    return s;
}

/* After the last LOCKED or BROKEN event: every call is IN, its place advances by one modulo
 * the period, and each place always sees the same key, the key of the true cycle at that
 * offset. Returns the index of the last lock (or n when none). */
static size_t
check_locked_tail(const uint64_t *keys, size_t n, const terse_cycle_event_t *ev,
                  const size_t *place, size_t true_period)
{
    size_t last = n, i;

    for (i = 0; i < n; ++i) {
        if ((ev[i] == TERSE_CYCLE_LOCKED) || (ev[i] == TERSE_CYCLE_BROKEN)) {
            last = i;
        }
    }
    CU_ASSERT_FATAL(last < n);
    CU_ASSERT_EQUAL(ev[last], TERSE_CYCLE_LOCKED);
    for (i = last + 1; i < n; ++i) {
        CU_ASSERT_EQUAL(ev[i], TERSE_CYCLE_IN);
        CU_ASSERT_EQUAL(place[i], (place[i - 1] + 1) % true_period);
        /* the same place, one true period later, carries the same key */
        if (i >= last + 1 + true_period) {
            CU_ASSERT_EQUAL(keys[i], keys[i - true_period]);
        }
    }
    return last;
}

/* Period 3, recur 3: learning for exactly (3 + 1) x 3 - 1 calls, locked at the 12th call as
 * place 2, then places 0 1 2 0 1 2 ... */
static void
test_lock_simple(void)
{
    const uint64_t cyc[3] = {terse__cycle_key(1000, 0, 0), terse__cycle_key(2000, 0, 0),
                             terse__cycle_key(1000, 2, 0)};
    terse_cycle_event_t ev[60];
    size_t place[60], i;
    uint64_t *s = make_stream(cyc, 3, 20);
    terse_cycle_t cy;

    CU_ASSERT_FATAL(s != NULL);
    terse__cycle_init(&cy, 3);
    feed_all(&cy, s, 60, ev, place);
    for (i = 0; i < 11; ++i) {
        CU_ASSERT_EQUAL(ev[i], TERSE_CYCLE_LEARNING);
        CU_ASSERT_EQUAL(place[i], (size_t)-1);
    }
    CU_ASSERT_EQUAL(ev[11], TERSE_CYCLE_LOCKED);
    CU_ASSERT_EQUAL(place[11], 2);
    CU_ASSERT_EQUAL(cy.period, 3);
    for (i = 12; i < 60; ++i) {
        CU_ASSERT_EQUAL(ev[i], TERSE_CYCLE_IN);
        CU_ASSERT_EQUAL(place[i], i % 3);
    }
    CU_ASSERT_EQUAL(cy.cycles, 16);
    terse__cycle_free(&cy);
    terse__cycle_free(&cy); /* twice is safe */
    free(s);
}

/* recur 1 locks after two equal rounds; recur 0 is taken as 1; keys differ in dtype and op. */
static void
test_recur_and_keys(void)
{
    const uint64_t cyc[2] = {terse__cycle_key(4096, 0, 0), terse__cycle_key(4096, 0, 1)};
    terse_cycle_event_t ev[8];
    size_t place[8];
    uint64_t *s = make_stream(cyc, 2, 4);
    terse_cycle_t cy;

    CU_ASSERT_FATAL(s != NULL);
    CU_ASSERT_NOT_EQUAL(terse__cycle_key(4096, 0, 0), terse__cycle_key(4096, 1, 0));
    CU_ASSERT_NOT_EQUAL(terse__cycle_key(4096, 0, 0), terse__cycle_key(4097, 0, 0));
    terse__cycle_init(&cy, 0);
    CU_ASSERT_EQUAL(cy.recur, 1);
    feed_all(&cy, s, 8, ev, place);
    CU_ASSERT_EQUAL(ev[2], TERSE_CYCLE_LEARNING);
    CU_ASSERT_EQUAL(ev[3], TERSE_CYCLE_LOCKED);
    CU_ASSERT_EQUAL(place[3], 1);
    CU_ASSERT_EQUAL(ev[4], TERSE_CYCLE_IN);
    CU_ASSERT_EQUAL(place[4], 0);
    terse__cycle_free(&cy);
    free(s);
}

/* A transformer's DDP buckets: one odd bucket, a run of R equal ones, another odd one. The
 * run locks short false cycles; each break must lengthen the next window, and the true cycle
 * (R + 2) must lock within a few steps and then hold. */
static void
test_run_of_equal_keys(void)
{
    static const size_t runs[] = {4, 5, 20, 63, 200};
    size_t k;
    int saved = quiet_begin();

    for (k = 0; k < sizeof(runs) / sizeof(runs[0]); ++k) {
        const size_t R = runs[k], P = R + 2, steps = 40;
        uint64_t *cyc = malloc(P * sizeof(*cyc)), *s;
        terse_cycle_event_t *ev;
        size_t *place, i, last, breaks = 0;
        terse_cycle_t cy;

        CU_ASSERT_FATAL(cyc != NULL);
        cyc[0] = terse__cycle_key(777, 0, 0);
        for (i = 1; i <= R; ++i) {
            cyc[i] = terse__cycle_key(1 << 20, 0, 0);
        }
        cyc[R + 1] = terse__cycle_key(333, 0, 0);
        s     = make_stream(cyc, P, steps);
        ev    = malloc(P * steps * sizeof(*ev));
        place = malloc(P * steps * sizeof(*place));
        CU_ASSERT_FATAL((s != NULL) && (ev != NULL) && (place != NULL));
        terse__cycle_init(&cy, 3);
        feed_all(&cy, s, P * steps, ev, place);
        last = check_locked_tail(s, P * steps, ev, place, P);
        for (i = 0; i < P * steps; ++i) {
            breaks += (ev[i] == TERSE_CYCLE_BROKEN);
        }
        /* the true cycle needs 4 rounds of evidence; false locks cost at most 4 more steps */
        CU_ASSERT(last < P * 9);
        CU_ASSERT(breaks <= 4);
        CU_ASSERT_EQUAL(cy.period, P);
        if ((last >= P * 9) || (breaks > 4) || (cy.period != P)) {
            fprintf(stderr, "run %zu: locked at call %zu (period %zu), %zu breaks\n", R, last,
                    cy.period, breaks);
        }
        terse__cycle_free(&cy);
        free(cyc);
        free(s);
        free(ev);
        free(place);
    }
    terse__log_level = saved;
}

/* A locked cycle that changes (the job's phase changed, here to a shorter cycle): one BROKEN
 * event, pass-through while learning, then the new cycle locks within a bounded number of
 * calls. A one-off extra call inside a long-held cycle: the same cycle locks again. */
static void
test_change_and_one_off(void)
{
    const uint64_t a[5] = {11 << 16, 12 << 16, 13 << 16, 14 << 16, 15 << 16};
    const uint64_t b[2] = {21 << 16, 22 << 16};
    const size_t na = 5 * 30, nb = 2 * 200, n = na + nb;
    uint64_t *s = malloc(n * sizeof(*s));
    terse_cycle_event_t *ev = malloc(n * sizeof(*ev));
    size_t *place = malloc(n * sizeof(*place)), i, last, nbreak = 0;
    terse_cycle_t cy;
    int saved = quiet_begin();

    CU_ASSERT_FATAL((s != NULL) && (ev != NULL) && (place != NULL));
    for (i = 0; i < na; ++i) {
        s[i] = a[i % 5];
    }
    for (i = 0; i < nb; ++i) {
        s[na + i] = b[i % 2];
    }
    terse__cycle_init(&cy, 3);
    feed_all(&cy, s, n, ev, place);
    for (i = 0; i < n; ++i) {
        nbreak += (ev[i] == TERSE_CYCLE_BROKEN);
    }
    CU_ASSERT_EQUAL(nbreak, 1);
    CU_ASSERT_EQUAL(ev[na], TERSE_CYCLE_BROKEN);
    last = check_locked_tail(s, n, ev, place, 2);
    /* a one-round-evidence window of the new cycle is 8 calls; the break asks for at most
     * 4 x (4 x 5) + 1 = 81 calls */
    CU_ASSERT(last >= na + 8);
    CU_ASSERT(last <= na + 81 + 2);
    CU_ASSERT_EQUAL(cy.period, 2);
    terse__cycle_free(&cy);

    /* one-off: 30 rounds of a, one extra call, 30 more rounds of a */
    for (i = 0; i < n; ++i) {
        s[i] = a[i % 5];
    }
    s[na] = 99 << 16;
    terse__cycle_init(&cy, 3);
    feed_all(&cy, s, n, ev, place);
    CU_ASSERT_EQUAL(ev[na], TERSE_CYCLE_BROKEN);
    last = check_locked_tail(s, n, ev, place, 5);
    CU_ASSERT(last <= na + 81 + 5);
    CU_ASSERT_EQUAL(cy.period, 5);
    terse__cycle_free(&cy);
    terse__log_level = saved;
    free(s);
    free(ev);
    free(place);
}

/* Beyond the history's size: a long non-periodic stream never locks, then a cycle still does. */
static void
test_long_history(void)
{
    const size_t n1 = 3 * TERSE_CYCLE_HIST_MAX, n2 = 7 * 10, n = n1 + n2;
    uint64_t *s = malloc(n * sizeof(*s));
    terse_cycle_event_t *ev = malloc(n * sizeof(*ev));
    size_t *place = malloc(n * sizeof(*place)), i;
    terse_cycle_t cy;

    CU_ASSERT_FATAL((s != NULL) && (ev != NULL) && (place != NULL));
    for (i = 0; i < n1; ++i) {
        s[i] = terse__cycle_key(i + 1, 0, 0);
    }
    for (i = 0; i < n2; ++i) {
        s[n1 + i] = terse__cycle_key(100 + (i % 7), 1, 0);
    }
    terse__cycle_init(&cy, 3);
    feed_all(&cy, s, n, ev, place);
    for (i = 0; i < n1; ++i) {
        CU_ASSERT_EQUAL(ev[i], TERSE_CYCLE_LEARNING);
    }
    CU_ASSERT(cy.nhist <= TERSE_CYCLE_HIST_MAX);
    CU_ASSERT_EQUAL(check_locked_tail(s, n, ev, place, 7), n1 + 27);
    terse__cycle_free(&cy);
    free(s);
    free(ev);
    free(place);
}

static CU_TestInfo callcycle_tests[] = {
    {"lock after recur + 1 rounds, places", test_lock_simple},
    {"recur 0 and 1, keys", test_recur_and_keys},
    {"runs of equal keys inside a cycle", test_run_of_equal_keys},
    {"cycle change and one-off calls", test_change_and_one_off},
    {"history beyond its size", test_long_history},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_callcycle_suites[] = {
    {"comm_callcycle", NULL, NULL, NULL, NULL, callcycle_tests},
    CU_SUITE_INFO_NULL,
};
