# terse-bench -m allreduce -T nccl (bench/bench_nccl.c): CUDA builds with nccl.h. Headers only:
# terse-bench loads the NCCL of the machine at run time, nothing links libnccl.
if(TERSE_HAVE_CUDA AND TERSE_HAVE_NCCL AND TARGET terse-bench)
    target_sources(terse-bench PRIVATE ${CMAKE_CURRENT_LIST_DIR}/bench_nccl.c)
    target_include_directories(terse-bench PRIVATE ${TERSE_NCCL_INCLUDE_DIR}
                               ${CUDAToolkit_INCLUDE_DIRS})
endif()
