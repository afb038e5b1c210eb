/*
 * The only place a TERSE_* variable is defined. This table expands into the configuration
 * struct (terse_config_t), the parser (env.c), `terse-info -e`, and the README's table (a test
 * keeps the README in sync: run `terse-info -e -m` and paste its output between the markers).
 *
 * TERSE_ENV(NAME, TYPE, DEFAULT, ACCEPTED, DOC)
 *   TYPE      ENUM (ACCEPTED lists the values, '|'-separated; stored as the index)
 *             BOOL (0|1, also yes/no/true/false/on/off)
 *             INT, DOUBLE (ACCEPTED is "min..max"; inf allowed for DOUBLE)
 *             SIZE (bytes, with an optional K, M, G or T suffix, powers of 1024)
 *             SPEC (a compressor spec, validated against the compressor registry)
 *             STRING, PATH (free text; PATH may use %h %p %r)
 *   DOC       one line.
 */
/*       NAME            TYPE    DEFAULT    ACCEPTED                               DOC */
TERSE_ENV(LOG_LEVEL,      ENUM,   "warn",    "error|warn|info|debug|trace",
          "how much terse logs")
TERSE_ENV(LOG_SUBSYS,     STRING, "all",     "all or a comma list of base,cmp,comm,sched,shim,bench; ^ excludes",
          "which subsystems log (like NCCL_DEBUG_SUBSYS)")
TERSE_ENV(LOG_FILE,       PATH,   "",        "a path; %h host, %p pid, %r rank",
          "write log lines to this file instead of stderr")
TERSE_ENV(COMPRESSOR,     SPEC,   "quant:4", "none|cast:bf16|cast:fp16|quant:B (B 2..8)|sign|topk:D|randomk:D|powersgd:R",
          "the compressor every layer uses (a uniform plan)")
TERSE_ENV(SEED,           INT,    "1",       "0..2147483647",
          "base of every random stream (stochastic rounding, random-k, PowerSGD Q)")
TERSE_ENV(QUANT_BUCKET,   INT,    "512",     "32..65536",
          "values per scale bucket for quant and sign (a multiple of 32)")
TERSE_ENV(ERROR_FEEDBACK, BOOL,   "1",       "0|1",
          "carry what compression lost to the next step (0 only for experiments and tests)")
TERSE_ENV(TOPOLOGY,       STRING, "auto",    "auto|flat|N (ranks per node, 1..)",
          "ranks per node: auto (hostname, boot id, netns), flat (each rank a node), N consecutive")
TERSE_ENV(MIN_BYTES,      SIZE,   "64K",     "bytes, with an optional K, M, G or T suffix",
          "the MPI shim compresses only allreduces of at least this many bytes")
TERSE_ENV(COMPRESS_DOUBLE, BOOL,  "0",       "0|1",
          "also compress double-precision sums (through fp32); off: doubles pass through exactly")
TERSE_ENV(SHIM,           BOOL,   "1",       "0|1",
          "0: libterse-mpi.so passes every call through (it still takes part in the agreement)")
TERSE_ENV(MPI_CYCLE_RECUR, INT,   "3",       "1..1000",
          "times the per-step cycle of allreduce calls must repeat before the shim compresses it")
