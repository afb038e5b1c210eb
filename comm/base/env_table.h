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
TERSE_ENV(COMPRESSOR,     SPEC,   "auto",    "auto|none|cast:bf16|cast:fp16|quant:B (B 2..8)|sign|topk:D|randomk:D|powersgd:R",
          "auto: the error-budget scheduler plans per layer; otherwise every layer uses this one")
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
TERSE_ENV(WARMUP_STEPS,   INT,    "10",      "0..1000000",
          "auto: allreduces of a layout sent uncompressed before the first plan")
TERSE_ENV(REPLAN_STEPS,   INT,    "100",     "1..1000000",
          "auto: allreduces of a layout between two plans (statistics, solve, switch one step later)")
TERSE_ENV(ERROR_BUDGET,   DOUBLE, "1",       "0..inf",
          "auto: allowed sum of squared errors, times that of TERSE_REFERENCE on every layer")
TERSE_ENV(REFERENCE,      SPEC,   "quant:4", "a compressor spec (not auto)",
          "auto: the uniform setting the error budget is measured against")
TERSE_ENV(ERROR_FRACTION, DOUBLE, "0",       "0..inf",
          "auto: if > 0, the budget is this fraction of the squared gradient norm instead")
TERSE_ENV(SCHED_OBJECTIVE, ENUM,  "time",    "time|bytes",
          "auto: minimise predicted time (latency, bandwidth, compress cost) or bytes sent")
TERSE_ENV(LINK_LATENCY,   DOUBLE, "0",       "0..inf",
          "auto: seconds per message for the cost model; 0 measures it at the first plan")
TERSE_ENV(LINK_BANDWIDTH, DOUBLE, "0",       "0..inf",
          "auto: bus bandwidth in bytes/s for the cost model; 0 measures it at the first plan")
TERSE_ENV(PLAN,           PATH,   "",        "a plan CSV (terse-plan-bench format); %h %p %r",
          "pin this plan for the registered layers (checksum agreed across ranks); no re-planning")
TERSE_ENV(PLAN_OUT,       PATH,   "",        "a path; %h host, %p pid, %r rank",
          "write every plan the scheduler solves to this CSV file")
TERSE_ENV(STATS,          PATH,   "",        "a path; %h host, %p pid, %r rank",
          "append one JSON line per allreduce per rank: per layer compressor, bytes, errors, times")
TERSE_ENV(LAYOUT,         PATH,   "",        "a file of lines: count rows cols name (buffer order)",
          "layer map for unregistered buffers whose size matches the file's total (shim mode)")
TERSE_ENV(SEGMENT_BYTES,  SIZE,   "0",       "bytes, with an optional K, M, G or T suffix; 0 off",
          "auto: cut unregistered buffers into segments of this size, planned separately")
TERSE_ENV(LAYER_ERROR_CAP, DOUBLE, "0.5",    "0..inf",
          "auto: a layer's candidate may lose at most this fraction of its squared norm per step")
TERSE_ENV(STATE_DIR,      PATH,   "",        "a directory",
          "shim mode: save state to DIR/terse-state.RANK.bin at finalize, load it at start")
TERSE_ENV(STATE_EVERY,    INT,    "0",       "0..2147483647",
          "shim mode with TERSE_STATE_DIR: also save every this many call cycles (0: finalize only)")
TERSE_ENV(NCCL_LIBRARY,   PATH,   "",        "a path or soname of libnccl",
          "NCCL path: take NCCL from this library instead of the copy the caller links (never loads a second one otherwise)")
TERSE_ENV(HIERARCHY,      ENUM,   "auto",    "auto|flat|on",
          "hierarchical allreduce: uncompressed inside a node, compressed between nodes (auto: when TERSE_TOPOLOGY finds several nodes of several ranks)")
TERSE_ENV(HIER_CHUNK_BYTES, SIZE, "4M",      "bytes, with an optional K, M, G or T suffix; 0 off",
          "hierarchical allreduce: pipeline chunk of a rank's shard (intra- and inter-node stages overlap)")
TERSE_ENV(ERROR_MEASURE,  ENUM,   "adam",    "adam|sq",
          "auto: the error the budget counts: squared error per element over that element's mean square (Adafactor's row x column estimate; what Adam-type optimizers see), or plain squared error")
TERSE_ENV(TORCH_HELPER,   BOOL,   "0",       "0|1",
          "PyTorch: with PYTHONPATH=examples/ddp/terse_helper, register each DDP bucket's per-parameter layout with libterse-nccl.so")
TERSE_ENV(TORCH_HELPER_STEP, INT, "1",       "0..1000000",
          "PyTorch helper: the DDP step (0 = first) at which every rank registers the bucket layouts")
TERSE_ENV(STATS_WINDOW,   INT,    "4",       "1..1000",
          "auto, TERSE_ERROR_MEASURE=adam: steps up to each plan whose squared gradients give E[g^2] (host buffers; the device path uses the plan step)")
TERSE_ENV(STATS_ASYNC,    ENUM,   "auto",    "auto|on|off",
          "auto: take a re-plan's statistics on a helper thread, its collective half TERSE_STATS_LAG steps later (auto: on for device buffers, where they would stall the GPU's step)")
TERSE_ENV(STATS_LAG,      INT,    "3",       "1..1000",
          "auto with TERSE_STATS_ASYNC: steps from a plan step to its collective half (at most TERSE_REPLAN_STEPS - 2)")
TERSE_ENV(DEVICE_TABLES,  BOOL,   "1",       "0|1",
          "NCCL path: quant, sign, cast, top-k and random-k layers of up to 2^20 elements as multi-tensor tables and every PowerSGD layer as one batch (launches per bucket grow with ranks and families, not layers; 0: per layer, the same bits)")
