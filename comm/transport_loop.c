/*
 * The loop transport: ranks are threads of one process (Gloo's spawnThreads pattern), for the
 * unit tests of the wire algorithms. Sends are eager (the bytes are copied when posted, so an
 * isend completes at once); a receive matches the first message from (peer, tag) in posting
 * order, like MPI. Collectives meet at a generation barrier and combine in rank order, so
 * every result is deterministic.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "compressor.h"
#include "transport.h"

typedef struct loop_msg {
    struct loop_msg *next;
    int              src;
    int              tag;
    size_t           bytes;
    unsigned char    data[];
} loop_msg_t;

typedef struct loop_recv {
    struct loop_recv *next;
    void             *buf;
    size_t            bytes;
    int               src;
    int               tag;
    int               done;
    terse_status_t    status;
} loop_recv_t;

typedef struct loop_ep {
    terse_transport_t   tp;       /* must stay first: instances are handed out as this */
    terse_loop_group_t *group;
    loop_msg_t         *msgs;     /* unmatched messages to this rank, arrival order */
    loop_recv_t        *pending;  /* unmatched receives of this rank, posting order */
    int                 split;    /* 1: an endpoint of a group made by loop_split */
} loop_ep_t;

struct terse_loop_group {
    int             nranks;
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    unsigned        arrived;
    unsigned long   generation;
    const void    **slots;        /* collective arguments, one per rank */
    loop_ep_t      *eps;
    int             refs;         /* split groups: endpoints not yet finalized */
};

terse_status_t
terse_loop_group_create(int nranks, terse_loop_group_t **group_p)
{
    terse_loop_group_t *g;
    int r;

    if ((nranks < 1) || (group_p == NULL)) {
        return TERSE_ERR_INVALID;
    }
    g = calloc(1, sizeof(*g));
    if (g == NULL) {
        return TERSE_ERR_NOMEM;
    }
    g->slots = calloc((size_t)nranks, sizeof(*g->slots));
    g->eps   = calloc((size_t)nranks, sizeof(*g->eps));
    if ((g->slots == NULL) || (g->eps == NULL)) {
        free(g->slots);
        free(g->eps);
        free(g);
        terse_error(TERSE_LOG_COMM, "failed to allocate a loop group of %d ranks", nranks);
        return TERSE_ERR_NOMEM;
    }
    g->nranks = nranks;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    for (r = 0; r < nranks; ++r) {
        g->eps[r].tp.ops    = &terse_transport_loop_ops;
        g->eps[r].tp.rank   = r;
        g->eps[r].tp.nranks = nranks;
        g->eps[r].group     = g;
    }
    *group_p = g;
    return TERSE_OK;
}

void
terse_loop_group_destroy(terse_loop_group_t *group)
{
    int r;

    if (group == NULL) {
        return;
    }
    for (r = 0; r < group->nranks; ++r) {
        while (group->eps[r].msgs != NULL) {
            loop_msg_t *m       = group->eps[r].msgs;
            group->eps[r].msgs = m->next;
            free(m);
        }
    }
    pthread_mutex_destroy(&group->lock);
    pthread_cond_destroy(&group->cond);
    free(group->slots);
    free(group->eps);
    free(group);
}

void *
terse_loop_endpoint(terse_loop_group_t *group, int rank)
{
    if ((group == NULL) || (rank < 0) || (rank >= group->nranks)) {
        return NULL;
    }
    return &group->eps[rank];
}

typedef struct loop_thread {
    pthread_t          thread;
    terse_loop_func_t  fn;
    void              *ep;
    int                rank;
    int                nranks;
    void              *arg;
} loop_thread_t;

static void *
loop_thread_main(void *arg)
{
    loop_thread_t *t = arg;

    terse__log_set_rank(t->rank);
    t->fn(t->ep, t->rank, t->nranks, t->arg);
    return NULL;
}

terse_status_t
terse_loop_run(int nranks, terse_loop_func_t fn, void *arg)
{
    terse_loop_group_t *g;
    loop_thread_t *th;
    terse_status_t status = TERSE_OK;
    int r, started = 0;

    TERSE_CHECK(terse_loop_group_create(nranks, &g));
    th = calloc((size_t)nranks, sizeof(*th));
    if (th == NULL) {
        terse_loop_group_destroy(g);
        return TERSE_ERR_NOMEM;
    }
    for (r = 0; r < nranks; ++r) {
        th[r].fn     = fn;
        th[r].ep     = &g->eps[r];
        th[r].rank   = r;
        th[r].nranks = nranks;
        th[r].arg    = arg;
        if (pthread_create(&th[r].thread, NULL, loop_thread_main, &th[r]) != 0) {
            terse_error(TERSE_LOG_COMM, "failed to start loop rank %d", r);
            status = TERSE_ERR_SYSTEM;
            break; /* the started ranks would wait forever in a collective: abort below */
        }
        ++started;
    }
    if (status != TERSE_OK) {
        abort();
    }
    for (r = 0; r < started; ++r) {
        pthread_join(th[r].thread, NULL);
    }
    free(th);
    terse_loop_group_destroy(g);
    return status;
}

/* ---------------------------------------------------------------- ops */
static terse_status_t
loop_query(void *comm, int *usable_p)
{
    *usable_p = (comm != NULL);
    return TERSE_OK;
}

static terse_status_t
loop_init(void *comm, terse_transport_t **tp_p)
{
    loop_ep_t *ep = comm;

    if (ep == NULL) {
        return TERSE_ERR_INVALID;
    }
    ep->tp.bytes_sent = 0;
    *tp_p             = &ep->tp;
    return TERSE_OK;
}

static void
loop_finalize(terse_transport_t *tp)
{
    loop_ep_t *ep = (loop_ep_t *)tp;
    terse_loop_group_t *g;
    int last;

    /* the endpoint belongs to its group; a split group goes with its last endpoint */
    if ((ep == NULL) || !ep->split) {
        return;
    }
    g = ep->group;
    pthread_mutex_lock(&g->lock);
    last = (--g->refs == 0);
    pthread_mutex_unlock(&g->lock);
    if (last) {
        terse_loop_group_destroy(g);
    }
}

/* Generation barrier; called with the lock held. */
static void
loop_barrier_locked(terse_loop_group_t *g)
{
    unsigned long gen = g->generation;

    if (++g->arrived == (unsigned)g->nranks) {
        g->arrived = 0;
        ++g->generation;
        pthread_cond_broadcast(&g->cond);
        return;
    }
    while (gen == g->generation) {
        pthread_cond_wait(&g->cond, &g->lock);
    }
}

static terse_status_t
loop_barrier(terse_transport_t *tp)
{
    terse_loop_group_t *g = ((loop_ep_t *)tp)->group;

    pthread_mutex_lock(&g->lock);
    loop_barrier_locked(g);
    pthread_mutex_unlock(&g->lock);
    return TERSE_OK;
}

/* Publishes `ptr` in this rank's slot and waits until every rank did. */
static void
loop_publish(loop_ep_t *ep, const void *ptr)
{
    terse_loop_group_t *g = ep->group;

    pthread_mutex_lock(&g->lock);
    g->slots[ep->tp.rank] = ptr;
    loop_barrier_locked(g);
    pthread_mutex_unlock(&g->lock);
}

static terse_status_t
loop_allreduce(terse_transport_t *tp, const void *send, void *recv, size_t count,
               terse_tp_red_t red)
{
    loop_ep_t *ep         = (loop_ep_t *)tp;
    terse_loop_group_t *g = ep->group;
    size_t esize          = terse__tp_red_size(red);
    unsigned char *tmp;
    size_t i;
    int r;

    tmp = malloc(TERSE_MAX(count * esize, 1));
    if (tmp == NULL) {
        return TERSE_ERR_NOMEM; /* nobody waits yet: the caller fails before the barrier */
    }
    loop_publish(ep, send);
    for (i = 0; i < count; ++i) {
        switch (red) {
        case TERSE_TP_SUM_F32: {
            float acc = ((const float *)g->slots[0])[i];
            for (r = 1; r < g->nranks; ++r) {
                acc += ((const float *)g->slots[r])[i];
            }
            ((float *)tmp)[i] = acc;
            break;
        }
        case TERSE_TP_SUM_F64: {
            double acc = ((const double *)g->slots[0])[i];
            for (r = 1; r < g->nranks; ++r) {
                acc += ((const double *)g->slots[r])[i];
            }
            ((double *)tmp)[i] = acc;
            break;
        }
        case TERSE_TP_SUM_F16:
        case TERSE_TP_SUM_BF16: {
            terse_dtype_t dt = (red == TERSE_TP_SUM_F16) ? TERSE_FLOAT16 : TERSE_BFLOAT16;
            float acc        = terse__load_f32(g->slots[0], dt, i);
            for (r = 1; r < g->nranks; ++r) {
                acc += terse__load_f32(g->slots[r], dt, i);
            }
            terse__store_f32(tmp, dt, i, acc);
            break;
        }
        case TERSE_TP_MAX_U64: {
            uint64_t acc = ((const uint64_t *)g->slots[0])[i];
            for (r = 1; r < g->nranks; ++r) {
                acc = TERSE_MAX(acc, ((const uint64_t *)g->slots[r])[i]);
            }
            ((uint64_t *)tmp)[i] = acc;
            break;
        }
        }
    }
    loop_barrier(tp); /* everyone has read every send buffer: recv may alias send */
    memcpy(recv, tmp, count * esize);
    free(tmp);
    return TERSE_OK;
}

static terse_status_t
loop_allgather(terse_transport_t *tp, const void *send, void *recv, size_t bytes)
{
    loop_ep_t *ep         = (loop_ep_t *)tp;
    terse_loop_group_t *g = ep->group;
    int r;

    loop_publish(ep, send);
    for (r = 0; r < g->nranks; ++r) {
        if (bytes > 0) {
            memcpy((unsigned char *)recv + (size_t)r * bytes, g->slots[r], bytes);
        }
    }
    loop_barrier(tp);
    return TERSE_OK;
}

static void
loop_recv_fill(loop_recv_t *rv, const void *data, size_t bytes)
{
    if (bytes != rv->bytes) {
        terse_error(TERSE_LOG_COMM, "loop message from %d tag %d has %zu bytes, expected %zu",
                    rv->src, rv->tag, bytes, rv->bytes);
        rv->status = TERSE_ERR_PAYLOAD;
    } else {
        if (bytes > 0) {
            memcpy(rv->buf, data, bytes);
        }
        rv->status = TERSE_OK;
    }
    rv->done = 1;
}

static terse_status_t
loop_isend(terse_transport_t *tp, const void *buf, size_t bytes, int peer, int tag,
           terse_req_t *req)
{
    loop_ep_t *ep         = (loop_ep_t *)tp;
    terse_loop_group_t *g = ep->group;
    loop_ep_t *dst;
    loop_recv_t **pp, *rv;
    loop_msg_t *m, **tail;

    if ((peer < 0) || (peer >= g->nranks)) {
        return TERSE_ERR_INVALID;
    }
    dst    = &g->eps[peer];
    req->h[0] = 0;
    req->h[1] = 0;
    pthread_mutex_lock(&g->lock);
    for (pp = &dst->pending; *pp != NULL; pp = &(*pp)->next) {
        rv = *pp;
        if ((rv->src == tp->rank) && (rv->tag == tag)) {
            *pp = rv->next;
            loop_recv_fill(rv, buf, bytes);
            pthread_cond_broadcast(&g->cond);
            pthread_mutex_unlock(&g->lock);
            return TERSE_OK;
        }
    }
    m = malloc(sizeof(*m) + bytes);
    if (m == NULL) {
        pthread_mutex_unlock(&g->lock);
        terse_error(TERSE_LOG_COMM, "failed to allocate a loop message of %zu bytes", bytes);
        return TERSE_ERR_NOMEM;
    }
    m->next  = NULL;
    m->src   = tp->rank;
    m->tag   = tag;
    m->bytes = bytes;
    if (bytes > 0) {
        memcpy(m->data, buf, bytes);
    }
    for (tail = &dst->msgs; *tail != NULL; tail = &(*tail)->next) {
    }
    *tail = m;
    pthread_mutex_unlock(&g->lock);
    return TERSE_OK;
}

static terse_status_t
loop_irecv(terse_transport_t *tp, void *buf, size_t bytes, int peer, int tag, terse_req_t *req)
{
    loop_ep_t *ep         = (loop_ep_t *)tp;
    terse_loop_group_t *g = ep->group;
    loop_msg_t **pp, *m;
    loop_recv_t *rv, **tail;

    if ((peer < 0) || (peer >= g->nranks)) {
        return TERSE_ERR_INVALID;
    }
    rv = calloc(1, sizeof(*rv));
    if (rv == NULL) {
        return TERSE_ERR_NOMEM;
    }
    rv->buf   = buf;
    rv->bytes = bytes;
    rv->src   = peer;
    rv->tag   = tag;
    pthread_mutex_lock(&g->lock);
    for (pp = &ep->msgs; *pp != NULL; pp = &(*pp)->next) {
        m = *pp;
        if ((m->src == peer) && (m->tag == tag)) {
            *pp = m->next;
            loop_recv_fill(rv, m->data, m->bytes);
            free(m);
            break;
        }
    }
    if (!rv->done) {
        for (tail = &ep->pending; *tail != NULL; tail = &(*tail)->next) {
        }
        *tail = rv;
    }
    pthread_mutex_unlock(&g->lock);
    req->h[0] = 1;
    req->h[1] = (uintptr_t)rv;
    return TERSE_OK;
}

static terse_status_t
loop_waitall(terse_transport_t *tp, terse_req_t *reqs, size_t n)
{
    terse_loop_group_t *g = ((loop_ep_t *)tp)->group;
    terse_status_t status = TERSE_OK;
    loop_recv_t *rv;
    size_t i;

    for (i = 0; i < n; ++i) {
        if (reqs[i].h[0] != 1) {
            continue;
        }
        rv = (loop_recv_t *)reqs[i].h[1];
        pthread_mutex_lock(&g->lock);
        while (!rv->done) {
            pthread_cond_wait(&g->cond, &g->lock);
        }
        pthread_mutex_unlock(&g->lock);
        if ((rv->status != TERSE_OK) && (status == TERSE_OK)) {
            status = rv->status;
        }
        free(rv);
        reqs[i].h[0] = 0;
        reqs[i].h[1] = 0;
    }
    return status;
}

/* MPI_Comm_split for threads: (color, key) are published; the first member of each color
 * creates the color's group and publishes it; its members take their endpoints. */
static terse_status_t
loop_split(terse_transport_t *tp, int color, int key, terse_transport_t **sub_p)
{
    loop_ep_t *ep         = (loop_ep_t *)tp;
    terse_loop_group_t *g = ep->group, *sub = NULL;
    const int p = g->nranks, me = tp->rank;
    int mine[2] = {color, key}, r, size = 0, rank = 0, first = -1;
    terse_status_t status = TERSE_OK;

    loop_publish(ep, mine);
    for (r = 0; r < p; ++r) {
        const int *o = g->slots[r];
        if (o[0] != color) {
            continue;
        }
        if (first < 0) {
            first = r;
        }
        ++size;
        rank += ((o[1] < key) || ((o[1] == key) && (r < me)));
    }
    loop_barrier(tp);
    if (first == me) {
        if (terse_loop_group_create(size, &sub) == TERSE_OK) {
            sub->refs = size;
            for (r = 0; r < size; ++r) {
                sub->eps[r].split = 1;
            }
        }
    }
    loop_publish(ep, sub);
    sub = (terse_loop_group_t *)g->slots[first];
    loop_barrier(tp);
    if (sub == NULL) {
        return TERSE_ERR_NOMEM; /* every member of this color fails alike */
    }
    sub->eps[rank].tp.bytes_sent = 0;
    *sub_p = &sub->eps[rank].tp;
    return status;
}

const terse_transport_ops_t terse_transport_loop_ops = {
    .size      = sizeof(terse_transport_ops_t),
    .name      = "loop",
    .priority  = 0,
    .kind      = TERSE_TRANSPORT_LOOP,
    .query     = loop_query,
    .init      = loop_init,
    .finalize  = loop_finalize,
    .allreduce = loop_allreduce,
    .allgather = loop_allgather,
    .isend     = loop_isend,
    .irecv     = loop_irecv,
    .waitall   = loop_waitall,
    .barrier   = loop_barrier,
    .split     = loop_split,
};
