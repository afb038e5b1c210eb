# libterse-mpi.so: the MPI_Allreduce interposer (comm/shim_mpi.c) with the CPU library inside.
# It links libmpi (Open MPI's MPI_FLOAT and MPI_SUM are data symbols there: DESIGN.md section
# 3), never CUDA (device pointers are recognised through an already-loaded runtime only), and
# exports only MPI_Allreduce and terse_* (shim_mpi.map).
if(TERSE_HAVE_MPI)
    add_library(terse-mpi SHARED ${CMAKE_CURRENT_SOURCE_DIR}/shim_mpi.c
                $<TARGET_OBJECTS:terse_base> $<TARGET_OBJECTS:${TERSE_CMP_HOST_OBJECTS}>
                $<TARGET_OBJECTS:terse_scheduler> $<TARGET_OBJECTS:terse_comm>)
    set(_terse_shim_libs MPI::MPI_C Threads::Threads ${CMAKE_DL_LIBS})
    if(TERSE_LIBM)
        list(APPEND _terse_shim_libs ${TERSE_LIBM})
    endif()
    if(TERSE_HAVE_HWLOC)
        list(APPEND _terse_shim_libs PkgConfig::HWLOC)
    endif()
    target_link_libraries(terse-mpi PRIVATE ${_terse_shim_libs})
    target_link_options(terse-mpi PRIVATE
        -Wl,--version-script=${CMAKE_CURRENT_SOURCE_DIR}/shim_mpi.map -Wl,--no-undefined)
    set_target_properties(terse-mpi PROPERTIES LINK_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/shim_mpi.map)
    install(TARGETS terse-mpi LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()

# libterse-nccl.so: the ncclAllReduce interposer (comm/shim_nccl.c) with the whole library,
# device path included. No DT_NEEDED on libnccl (resolved at run time from the loaded copy:
# comm/nccl_loader.h), libcudart (the static runtime is linked in and hidden), libcublas or
# libmpi: a torch-only job must not pull in a second NCCL or an MPI (DESIGN.md section 3).
# The MPI transport's object is left out; shim_nccl.c stands in for its ops table.
# tests/comm/shim_nccl_deps.sh checks the dynamic section and the exports.
if(TERSE_HAVE_CUDA AND TERSE_HAVE_NCCL)
    add_library(terse-nccl SHARED ${CMAKE_CURRENT_SOURCE_DIR}/shim_nccl.c
                $<TARGET_OBJECTS:terse_base> $<TARGET_OBJECTS:terse_compressors>
                $<TARGET_OBJECTS:terse_compressors_cuda> $<TARGET_OBJECTS:terse_scheduler>
                $<FILTER:$<TARGET_OBJECTS:terse_comm>,EXCLUDE,/transport_mpi\\.c\\.o$>)
    target_include_directories(terse-nccl PRIVATE ${TERSE_NCCL_INCLUDE_DIR}
                               ${CUDAToolkit_INCLUDE_DIRS})
    set(_terse_nccl_libs CUDA::cudart_static Threads::Threads ${CMAKE_DL_LIBS})
    if(TERSE_LIBM)
        list(APPEND _terse_nccl_libs ${TERSE_LIBM})
    endif()
    if(TERSE_HAVE_HWLOC)
        list(APPEND _terse_nccl_libs PkgConfig::HWLOC)
    endif()
    target_link_libraries(terse-nccl PRIVATE ${_terse_nccl_libs})
    target_link_options(terse-nccl PRIVATE
        -Wl,--version-script=${CMAKE_CURRENT_SOURCE_DIR}/shim_nccl.map -Wl,--no-undefined)
    set_target_properties(terse-nccl PROPERTIES
        LINK_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/shim_nccl.map CUDA_RESOLVE_DEVICE_SYMBOLS ON)
    install(TARGETS terse-nccl LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
