# Small MPI programs that the shim tests run with and without LD_PRELOAD=libterse-mpi.so.
# They link only libmpi (never terse): what they see is what any MPI application sees.
if(TERSE_HAVE_MPI)
    foreach(_ex mpi_passthrough mpi_train)
        add_executable(${_ex} ${CMAKE_CURRENT_SOURCE_DIR}/${_ex}.c)
        target_link_libraries(${_ex} PRIVATE MPI::MPI_C ${TERSE_LIBM})
    endforeach()
endif()
