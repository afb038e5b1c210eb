# terse-bench-gpu: kernel benchmark of the CUDA compressors (issue 6), built only with CUDA.
# Included from bench/CMakeLists.txt.
if(TERSE_HAVE_CUDA)
    add_executable(terse-bench-gpu ${CMAKE_CURRENT_LIST_DIR}/bench_gpu.c
                                   ${CMAKE_CURRENT_LIST_DIR}/bench_gpu_hbm.cu)
    target_link_libraries(terse-bench-gpu PRIVATE terse_static)
    target_include_directories(terse-bench-gpu PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
endif()
