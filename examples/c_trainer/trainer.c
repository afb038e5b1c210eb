/*
 * c_trainer: a data-parallel C trainer that uses terse through its C API.
 *
 * Model: a byte-level language model on real text (the Python standard library's sources,
 * present on every machine with python3): the next byte is predicted from the previous C bytes
 * by an MLP
 *     h1 = relu(b1 + sum_p W1[p * 256 + x_p, :])      W1: (C * 256) x H   (an embedding per position)
 *     h2 = relu(b2 + h1 W2)                           W2: H x H
 *     logits = b3 + h2 W3                             W3: H x 256
 * trained with Adam on softmax cross-entropy. Every rank holds a replica; each step, every rank
 * computes the gradient of its share of the global batch, and the gradients are averaged with
 * terse_allreduce (or, with -P, a plain MPI_Allreduce: the uncompressed baseline). Files whose
 * index is a multiple of 10 are held out for evaluation.
 *
 * Output: a progress line per epoch (train loss, held-out loss and accuracy, bytes sent per step,
 * ratio against a plain allreduce), a summary table, and a final machine-readable line
 * "RESULT key value ..." for scripts. -o FILE writes the curve as CSV.
 *
 * Run: mpirun -np 4 build/examples/c_trainer/c_trainer [-P] [-s steps] [-S seed] ...
 */
#include <glob.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <terse.h>

#define VOCAB 256

typedef struct options {
    int         steps;      /* optimizer steps */
    int         batch;      /* samples per rank per step */
    int         context;    /* C: bytes of context */
    int         hidden;     /* H */
    int         epoch;      /* steps between progress lines */
    int         heldout;    /* held-out samples */
    unsigned    seed;       /* initialisation */
    unsigned    data_seed;  /* data order (the same across seeds: DESIGN.md section 9) */
    double      lr;
    int         plain;      /* 1: MPI_Allreduce, no terse */
    const char *glob;       /* text files */
    const char *csv;        /* curve output */
    const char *label;      /* name in the summary */
} options_t;

typedef struct corpus {
    unsigned char *train, *test;
    size_t         ntrain, ntest;
} corpus_t;

typedef struct model {
    int    C, H;
    size_t n;                  /* parameters */
    float *w;                  /* all parameters, layer after layer */
    float *W1, *b1, *W2, *b2, *W3, *b3;
    size_t off[6], cnt[6];
} model_t;

/* ---------------------------------------------------------------- random numbers */
static uint64_t
mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double
unit(uint64_t a, uint64_t b)
{
    return (double)(mix64(a ^ mix64(b)) >> 11) / 9007199254740992.0;
}

static float
gauss(uint64_t a, uint64_t b)
{
    double u1 = unit(a, 2 * b), u2 = unit(a, 2 * b + 1);
    return (float)(sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2));
}

/* ---------------------------------------------------------------- data */
static int
corpus_load(const char *pattern, corpus_t *c)
{
    glob_t g;
    size_t i, cap_tr = 0, cap_te = 0;

    memset(c, 0, sizeof(*c));
    if ((glob(pattern, 0, NULL, &g) != 0) || (g.gl_pathc < 10)) {
        fprintf(stderr, "c_trainer: fewer than 10 files match %s\n", pattern);
        return -1;
    }
    for (i = 0; i < g.gl_pathc; ++i) {
        FILE *f = fopen(g.gl_pathv[i], "rb");
        unsigned char **buf = (i % 10 == 0) ? &c->test : &c->train;
        size_t *len = (i % 10 == 0) ? &c->ntest : &c->ntrain;
        size_t *cap = (i % 10 == 0) ? &cap_te : &cap_tr;
        long sz;

        if (f == NULL) {
            continue;
        }
        fseek(f, 0, SEEK_END);
        sz = ftell(f);
        fseek(f, 0, SEEK_SET);
        if (sz > 0) {
            if (*len + (size_t)sz > *cap) {
                *cap = 2 * (*len + (size_t)sz);
                *buf = realloc(*buf, *cap);
            }
            *len += fread(*buf + *len, 1, (size_t)sz, f);
        }
        fclose(f);
    }
    globfree(&g);
    return ((c->ntrain > 100000) && (c->ntest > 10000)) ? 0 : -1;
}

/* ---------------------------------------------------------------- model */
static void
model_init(model_t *m, int C, int H, unsigned seed)
{
    size_t i, k, o = 0;
    float s;

    m->C      = C;
    m->H      = H;
    m->cnt[0] = (size_t)C * VOCAB * H;
    m->cnt[1] = H;
    m->cnt[2] = (size_t)H * H;
    m->cnt[3] = H;
    m->cnt[4] = (size_t)H * VOCAB;
    m->cnt[5] = VOCAB;
    for (k = 0; k < 6; ++k) {
        m->off[k] = o;
        o += m->cnt[k];
    }
    m->n = o;
    m->w = calloc(m->n, sizeof(float));
    m->W1 = m->w + m->off[0];
    m->b1 = m->w + m->off[1];
    m->W2 = m->w + m->off[2];
    m->b2 = m->w + m->off[3];
    m->W3 = m->w + m->off[4];
    m->b3 = m->w + m->off[5];
    /* same initialisation on every rank: the seed is shared */
    s = 1.0f / sqrtf((float)C);
    for (i = 0; i < m->cnt[0]; ++i) {
        m->W1[i] = s * gauss(seed * 7 + 1, i);
    }
    s = sqrtf(2.0f / (float)H);
    for (i = 0; i < m->cnt[2]; ++i) {
        m->W2[i] = s * gauss(seed * 7 + 2, i);
    }
    s = 1.0f / sqrtf((float)H);
    for (i = 0; i < m->cnt[4]; ++i) {
        m->W3[i] = s * gauss(seed * 7 + 3, i);
    }
}

typedef struct work {
    float *h1, *h2, *logits; /* B x H, B x H, B x VOCAB */
} work_t;

/* Forward (and backward when grad != NULL) over B samples whose contexts start at pos[].
 * Returns the summed loss; *correct gets the number of arg-max hits. Gradients are means. */
static double
model_step(const model_t *m, const unsigned char *text, const size_t *pos, int B, float *grad,
           work_t *w, int *correct)
{
    const int C = m->C, H = m->H;
    double loss = 0.0;
    int b, p, i, j, o;

    for (b = 0; b < B; ++b) {
        float *h1 = w->h1 + (size_t)b * H;
        memcpy(h1, m->b1, H * sizeof(float));
        for (p = 0; p < C; ++p) {
            const float *row = m->W1 + ((size_t)p * VOCAB + text[pos[b] + p]) * H;
            for (i = 0; i < H; ++i) {
                h1[i] += row[i];
            }
        }
        for (i = 0; i < H; ++i) {
            h1[i] = (h1[i] > 0.0f) ? h1[i] : 0.0f;
        }
        float *h2 = w->h2 + (size_t)b * H;
        memcpy(h2, m->b2, H * sizeof(float));
        for (i = 0; i < H; ++i) {
            const float a = h1[i], *row = m->W2 + (size_t)i * H;
            if (a == 0.0f) {
                continue;
            }
            for (j = 0; j < H; ++j) {
                h2[j] += a * row[j];
            }
        }
        for (j = 0; j < H; ++j) {
            h2[j] = (h2[j] > 0.0f) ? h2[j] : 0.0f;
        }
        float *lg = w->logits + (size_t)b * VOCAB;
        memcpy(lg, m->b3, VOCAB * sizeof(float));
        for (j = 0; j < H; ++j) {
            const float a = h2[j], *row = m->W3 + (size_t)j * VOCAB;
            if (a == 0.0f) {
                continue;
            }
            for (o = 0; o < VOCAB; ++o) {
                lg[o] += a * row[o];
            }
        }
        /* softmax cross-entropy; lg becomes dlogits */
        float mx = lg[0];
        int arg = 0;
        for (o = 1; o < VOCAB; ++o) {
            if (lg[o] > mx) {
                mx  = lg[o];
                arg = o;
            }
        }
        double z = 0.0;
        for (o = 0; o < VOCAB; ++o) {
            z += exp((double)(lg[o] - mx));
        }
        const int y = text[pos[b] + C];
        loss += log(z) - (double)(lg[y] - mx);
        *correct += (arg == y);
        if (grad != NULL) {
            for (o = 0; o < VOCAB; ++o) {
                lg[o] = (float)(exp((double)(lg[o] - mx)) / z) / (float)B;
            }
            lg[y] -= 1.0f / (float)B;
        }
    }
    if (grad == NULL) {
        return loss;
    }

    float *gW1 = grad + m->off[0], *gb1 = grad + m->off[1], *gW2 = grad + m->off[2];
    float *gb2 = grad + m->off[3], *gW3 = grad + m->off[4], *gb3 = grad + m->off[5];
    float *dh2 = malloc(H * sizeof(float)), *dh1 = malloc(H * sizeof(float));

    memset(grad, 0, m->n * sizeof(float));
    for (b = 0; b < B; ++b) {
        const float *h1 = w->h1 + (size_t)b * H, *h2 = w->h2 + (size_t)b * H;
        const float *dl = w->logits + (size_t)b * VOCAB;
        for (o = 0; o < VOCAB; ++o) {
            gb3[o] += dl[o];
        }
        for (j = 0; j < H; ++j) {
            const float *row = m->W3 + (size_t)j * VOCAB;
            float *grow = gW3 + (size_t)j * VOCAB, s = 0.0f;
            if (h2[j] == 0.0f) {
                dh2[j] = 0.0f;
                continue;
            }
            for (o = 0; o < VOCAB; ++o) {
                grow[o] += h2[j] * dl[o];
                s += row[o] * dl[o];
            }
            dh2[j] = s;
        }
        for (j = 0; j < H; ++j) {
            gb2[j] += dh2[j];
        }
        for (i = 0; i < H; ++i) {
            const float *row = m->W2 + (size_t)i * H;
            float *grow = gW2 + (size_t)i * H, s = 0.0f;
            if (h1[i] == 0.0f) {
                dh1[i] = 0.0f;
                continue;
            }
            for (j = 0; j < H; ++j) {
                grow[j] += h1[i] * dh2[j];
                s += row[j] * dh2[j];
            }
            dh1[i] = s;
        }
        for (i = 0; i < H; ++i) {
            gb1[i] += dh1[i];
        }
        for (p = 0; p < m->C; ++p) {
            float *grow = gW1 + ((size_t)p * VOCAB + text[pos[b] + p]) * H;
            for (i = 0; i < H; ++i) {
                grow[i] += dh1[i];
            }
        }
    }
    free(dh1);
    free(dh2);
    return loss;
}

/* ---------------------------------------------------------------- main */
static void
usage(void)
{
    fprintf(stderr,
            "usage: c_trainer [-P] [-s steps] [-b batch/rank] [-c context] [-H hidden]\n"
            "                 [-e steps/epoch] [-t heldout] [-S seed] [-D data-seed] [-l lr]\n"
            "                 [-g glob] [-o csv]\n"
            "                 [-L label]\n"
            "  -P  plain MPI_Allreduce (the uncompressed baseline); otherwise terse_allreduce\n");
}

static int
parse(int argc, char **argv, options_t *o)
{
    int c;

    *o = (options_t){.steps = 300, .batch = 32, .context = 8, .hidden = 512, .epoch = 50,
                     .heldout = 4096, .seed = 1, .data_seed = 1, .lr = 2e-3, .plain = 0,
                     .glob = "/usr/lib/python3*/*.py", .csv = NULL, .label = NULL};
    while ((c = getopt(argc, argv, "Ps:b:c:H:e:t:S:D:l:g:o:L:h")) != -1) {
        switch (c) {
        case 'P': o->plain = 1; break;
        case 's': o->steps = atoi(optarg); break;
        case 'b': o->batch = atoi(optarg); break;
        case 'c': o->context = atoi(optarg); break;
        case 'H': o->hidden = atoi(optarg); break;
        case 'e': o->epoch = atoi(optarg); break;
        case 't': o->heldout = atoi(optarg); break;
        case 'S': o->seed = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'D': o->data_seed = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'l': o->lr = atof(optarg); break;
        case 'g': o->glob = optarg; break;
        case 'o': o->csv = optarg; break;
        case 'L': o->label = optarg; break;
        default: usage(); return -1;
        }
    }
    if ((o->steps <= 0) || (o->batch <= 0) || (o->context <= 0) || (o->hidden <= 0) ||
        (o->epoch <= 0) || (o->heldout <= 0) || !(o->lr > 0.0)) {
        usage();
        return -1;
    }
    return 0;
}

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Held-out loss and accuracy over a fixed set of positions, split across ranks. */
static void
evaluate(const model_t *m, const corpus_t *c, const options_t *o, int rank, int size, work_t *w,
         double *loss_p, double *acc_p)
{
    double acc[2] = {0.0, 0.0};
    size_t pos[64];
    int i, n = 0, correct = 0;

    for (i = rank; i < o->heldout; i += size) {
        pos[n++] = (size_t)(unit(0xe7a1u, (uint64_t)i) * (double)(c->ntest - m->C - 1));
        if ((n == 64) || (i + size >= o->heldout)) {
            acc[0] += model_step(m, c->test, pos, n, NULL, w, &correct);
            n = 0;
        }
    }
    acc[1] = correct;
    MPI_Allreduce(MPI_IN_PLACE, acc, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    *loss_p = acc[0] / o->heldout;
    *acc_p  = acc[1] / o->heldout;
}

int
main(int argc, char **argv)
{
    static const char *const names[6] = {"W1", "b1", "W2", "b2", "W3", "b3"};
    options_t o;
    corpus_t corpus;
    model_t m;
    work_t w;
    terse_ctx_t *ctx = NULL;
    terse_stats_t st = {.size = sizeof(terse_stats_t)};
    MPI_Comm comm = MPI_COMM_WORLD;
    int rank, size, step, k, rc = 0;
    float *grad, *am, *av;
    size_t *pos, rows_max;
    double t0, t_comm = 0.0, loss_acc = 0.0, hl = 0.0, ha = 0.0, train_loss = 0.0;
    uint64_t plain_bytes = 0;
    FILE *csv = NULL;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (parse(argc, argv, &o) != 0) {
        MPI_Abort(comm, 2);
    }
    if (corpus_load(o.glob, &corpus) != 0) {
        fprintf(stderr, "c_trainer: cannot load text from %s\n", o.glob);
        MPI_Abort(comm, 2);
    }
    model_init(&m, o.context, o.hidden, o.seed);
    grad = calloc(m.n, sizeof(float));
    am   = calloc(m.n, sizeof(float));
    av   = calloc(m.n, sizeof(float));
    pos  = calloc((size_t)o.batch, sizeof(size_t));
    rows_max = (size_t)((o.batch > 64) ? o.batch : 64); /* evaluation runs 64 at a time */
    w.h1     = malloc(rows_max * o.hidden * sizeof(float));
    w.h2     = malloc(rows_max * o.hidden * sizeof(float));
    w.logits = malloc(rows_max * VOCAB * sizeof(float));

    if (!o.plain) {
        terse_ctx_params_t p = TERSE_CTX_PARAMS_INIT;
        terse_status_t s;

        p.transport = TERSE_TRANSPORT_MPI;
        p.comm      = &comm;
        p.name      = "c_trainer";
        s           = terse_ctx_create(&p, &ctx);
        for (k = 0; (k < 6) && (s == TERSE_OK); ++k) {
            size_t rows = (k == 0) ? (size_t)o.context * VOCAB : (k == 2) ? (size_t)o.hidden
                        : (k == 4) ? (size_t)o.hidden : 0;
            size_t cols = (k == 0) || (k == 2) ? (size_t)o.hidden : (k == 4) ? VOCAB : 0;
            s = terse_layer_register(ctx, names[k], m.cnt[k], rows, cols, NULL);
        }
        if (s != TERSE_OK) {
            fprintf(stderr, "c_trainer: terse setup failed: %s\n", terse_status_str(s));
            MPI_Abort(comm, 1);
        }
    }
    if ((rank == 0) && (o.csv != NULL)) {
        csv = fopen(o.csv, "w");
        if (csv != NULL) {
            fprintf(csv, "step,train_loss,heldout_loss,heldout_acc,bytes_per_step,ratio\n");
        }
    }
    if (rank == 0) {
        printf("# c_trainer %s: %d ranks, %zu parameters (%.1f MiB of fp32 gradients), "
               "batch %d x %d, context %d, hidden %d, seed %u, text %zu/%zu bytes train/held-out\n",
               o.plain ? "plain MPI_Allreduce" : "terse", size, m.n, m.n * 4.0 / 1048576.0,
               size, o.batch, o.context, o.hidden, o.seed, corpus.ntrain, corpus.ntest);
        printf("# %6s %10s %10s %9s %14s %8s %9s\n", "step", "loss", "held-loss", "held-acc",
               "bytes/step", "ratio", "ms/step");
    }

    t0 = now();
    for (step = 1; step <= o.steps; ++step) {
        int correct = 0, b;
        double t1;
        float lr_t;

        for (b = 0; b < o.batch; ++b) {
            uint64_t g = (uint64_t)rank * o.batch + b;
            pos[b] = (size_t)(unit(((uint64_t)o.data_seed << 32) | (uint64_t)step, g) *
                              (double)(corpus.ntrain - o.context - 1));
        }
        loss_acc += model_step(&m, corpus.train, pos, o.batch, grad, &w, &correct) / o.batch;

        t1 = now();
        if (o.plain) {
            MPI_Allreduce(MPI_IN_PLACE, grad, (int)m.n, MPI_FLOAT, MPI_SUM, comm);
            for (size_t i = 0; i < m.n; ++i) {
                grad[i] /= (float)size;
            }
        } else {
            terse_status_t s = terse_allreduce(ctx, grad, grad, m.n, TERSE_FLOAT32,
                                               TERSE_OP_AVG, TERSE_MEM_HOST, NULL);
            if ((s != TERSE_OK) && (s != TERSE_ERR_MISMATCH)) {
                fprintf(stderr, "c_trainer: terse_allreduce failed: %s\n", terse_status_str(s));
                MPI_Abort(comm, 1);
            }
        }
        t_comm += now() - t1;
        plain_bytes += (uint64_t)(2.0 * (size - 1) / size * (double)m.n * sizeof(float));

        /* Adam */
        lr_t = (float)(o.lr * sqrt(1.0 - pow(0.999, step)) / (1.0 - pow(0.9, step)));
        for (size_t i = 0; i < m.n; ++i) {
            float g = grad[i];
            am[i]   = 0.9f * am[i] + 0.1f * g;
            av[i]   = 0.999f * av[i] + 0.001f * g * g;
            m.w[i] -= lr_t * am[i] / (sqrtf(av[i]) + 1e-8f);
        }

        if ((step % o.epoch == 0) || (step == o.steps)) {
            double lacc[1] = {loss_acc}, bytes_step, ratio;
            int nsteps = (step % o.epoch == 0) ? o.epoch : step % o.epoch;

            MPI_Allreduce(MPI_IN_PLACE, lacc, 1, MPI_DOUBLE, MPI_SUM, comm);
            train_loss = lacc[0] / size / nsteps;
            loss_acc   = 0.0;
            evaluate(&m, &corpus, &o, rank, size, &w, &hl, &ha);
            if (o.plain) {
                bytes_step = (double)plain_bytes / step;
            } else {
                terse_stats_get(ctx, &st);
                bytes_step = (double)st.bytes_sent / step;
            }
            ratio = (double)plain_bytes / step / bytes_step;
            if (!isfinite(train_loss)) {
                if (rank == 0) {
                    fprintf(stderr, "c_trainer: loss is not finite at step %d\n", step);
                }
                rc = 3;
                break;
            }
            if (rank == 0) {
                printf("  %6d %10.4f %10.4f %9.4f %14.0f %8.2f %9.2f\n", step, train_loss, hl, ha,
                       bytes_step, ratio, 1e3 * (now() - t0) / step);
                fflush(stdout);
                if (csv != NULL) {
                    fprintf(csv, "%d,%.6f,%.6f,%.6f,%.0f,%.4f\n", step, train_loss, hl, ha,
                            bytes_step, ratio);
                }
            }
        }
    }

    if (rank == 0) {
        double total    = now() - t0;
        double bytes    = o.plain ? (double)plain_bytes : (double)st.bytes_sent;
        const char *lbl = (o.label != NULL) ? o.label : (o.plain ? "plain" : "terse");
        printf("# %-12s %6s %10s %10s %9s %14s %8s %9s %9s\n", "run", "steps", "loss",
               "held-loss", "held-acc", "bytes/step", "ratio", "ms/step", "comm-ms");
        printf("  %-12s %6d %10.4f %10.4f %9.4f %14.0f %8.2f %9.2f %9.2f\n", lbl, o.steps,
               train_loss, hl, ha, bytes / o.steps, (double)plain_bytes / bytes,
               1e3 * total / o.steps, 1e3 * t_comm / o.steps);
        printf("RESULT label %s steps %d loss %.6f heldout_loss %.6f heldout_acc %.6f "
               "bytes_per_step %.0f ratio %.4f ms_per_step %.3f\n",
               lbl, o.steps, train_loss, hl, ha, bytes / o.steps, (double)plain_bytes / bytes,
               1e3 * total / o.steps);
    }
    if (csv != NULL) {
        fclose(csv);
    }
    terse_ctx_destroy(ctx);
    free(grad);
    free(am);
    free(av);
    free(pos);
    free(w.h1);
    free(w.h2);
    free(w.logits);
    free(m.w);
    free(corpus.train);
    free(corpus.test);
    MPI_Finalize();
    return rc;
}
