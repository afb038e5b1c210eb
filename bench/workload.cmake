# terse-bench -m workload (bench/bench_workload.c, over MPI): model-shaped steps with the shapes
# in bench/model_shapes and the per-layer norms in bench/plan_data, found through
# TERSE_BENCH_SRC_DIR. Included from bench/CMakeLists.txt after terse-bench is defined;
# without MPI terse_bench.c's weak symbol says "workload mode is not in this build".
if(TERSE_HAVE_MPI)
    target_sources(terse-bench PRIVATE ${CMAKE_CURRENT_LIST_DIR}/bench_workload.c)
    target_compile_definitions(terse-bench PRIVATE
                               TERSE_BENCH_SRC_DIR="${CMAKE_CURRENT_LIST_DIR}")
endif()
