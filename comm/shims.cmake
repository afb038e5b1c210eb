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
