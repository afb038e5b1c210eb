# Tests of the MPI shim: the example programs run under mpirun with and without
# LD_PRELOAD=libterse-mpi.so (tests/comm/shim_test.sh says what each mode checks). The shim
# must come from a build without sanitizers (an ASan library preloaded into an uninstrumented
# program aborts), so these are skipped in a TERSE_SANITIZE build.
if(TERSE_HAVE_MPI AND TARGET terse-mpi AND TARGET mpi_train AND NOT TERSE_SANITIZE)
    set(_shim_env MPIEXEC=${MPIEXEC_EXECUTABLE} SHIM=$<TARGET_FILE:terse-mpi>
        PASSTHROUGH=$<TARGET_FILE:mpi_passthrough> TRAIN=$<TARGET_FILE:mpi_train>
        PYSCRIPT=${CMAKE_CURRENT_SOURCE_DIR}/comm/shim_mpi4py.py)
    foreach(_case passthrough:2 passthrough:3 compress:2 compress:3 compress:4 envdiff:3
                  badenv:3 squeeze:2 mpi4py:3 state:2 state:3)
        string(REPLACE ":" ";" _parts ${_case})
        list(GET _parts 0 _mode)
        list(GET _parts 1 _np)
        add_test(NAME shim_mpi_${_mode}_np${_np}
                 COMMAND ${CMAKE_COMMAND} -E env ${_shim_env}
                         bash ${CMAKE_CURRENT_SOURCE_DIR}/comm/shim_test.sh ${_mode} ${_np})
        set_tests_properties(shim_mpi_${_mode}_np${_np} PROPERTIES TIMEOUT 60 LABELS mpi
                             RUN_SERIAL ON)
    endforeach()
endif()

# The shims' dynamic sections and exports (readelf -d, nm -D): CPU tests, CI runs them.
if(TARGET terse-mpi)
    add_test(NAME shim_deps_mpi COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/comm/shim_deps_test.sh
             mpi $<TARGET_FILE:terse-mpi>)
    set_tests_properties(shim_deps_mpi PROPERTIES TIMEOUT 30 LABELS cpu)
endif()
if(TARGET terse-nccl)
    add_test(NAME shim_deps_nccl COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/comm/shim_deps_test.sh
             nccl $<TARGET_FILE:terse-nccl>)
    set_tests_properties(shim_deps_nccl PROPERTIES TIMEOUT 30 LABELS cpu)
endif()

# The PyTorch helper's pure-Python parts (no torch needed): CPU, CI.
find_program(TERSE_PYTHON3 python3)
if(TERSE_PYTHON3)
    add_test(NAME shim_torch_helper
             COMMAND ${TERSE_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/comm/test_terse_helper.py)
    set_tests_properties(shim_torch_helper PROPERTIES TIMEOUT 30 LABELS cpu)
endif()

# libterse-nccl.so under PyTorch on 2 GPUs (tests/comm/shim_nccl_test.sh says what each mode
# checks); exit 77 (no torch, fewer than 2 GPUs) counts as skipped.
if(TARGET terse-nccl AND NOT TERSE_SANITIZE)
    foreach(_mode passthrough compress envdiff badenv helper)
        add_test(NAME shim_nccl_${_mode}
                 COMMAND ${CMAKE_COMMAND} -E env SHIM=$<TARGET_FILE:terse-nccl> SRC=${CMAKE_SOURCE_DIR}
                         bash ${CMAKE_CURRENT_SOURCE_DIR}/comm/shim_nccl_test.sh ${_mode})
        set_tests_properties(shim_nccl_${_mode} PROPERTIES TIMEOUT 300 LABELS gpu RUN_SERIAL ON
                             SKIP_RETURN_CODE 77)
    endforeach()
endif()

# libterse-nccl.so without a GPU, over a stand-in libnccl.so.2 (tests/comm/fake_nccl.c): the
# pass-through paths, warnings and exit report (tests/comm/shim_nccl_cpu.sh). CPU, CI.
if(TARGET terse-nccl AND NOT TERSE_SANITIZE)
    add_library(terse_fake_nccl SHARED ${CMAKE_CURRENT_SOURCE_DIR}/comm/fake_nccl.c)
    set_target_properties(terse_fake_nccl PROPERTIES OUTPUT_NAME nccl SOVERSION 2
                          C_VISIBILITY_PRESET default
                          LIBRARY_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fake_nccl)
    target_include_directories(terse_fake_nccl PRIVATE ${TERSE_NCCL_INCLUDE_DIR}
                               ${CUDAToolkit_INCLUDE_DIRS})
    add_executable(shim_nccl_cpu ${CMAKE_CURRENT_SOURCE_DIR}/comm/shim_nccl_cpu.c)
    target_include_directories(shim_nccl_cpu PRIVATE ${TERSE_NCCL_INCLUDE_DIR}
                               ${CUDAToolkit_INCLUDE_DIRS})
    target_link_libraries(shim_nccl_cpu PRIVATE terse_fake_nccl ${CMAKE_DL_LIBS})
    add_test(NAME shim_nccl_cpu
             COMMAND ${CMAKE_COMMAND} -E env SHIM=$<TARGET_FILE:terse-nccl>
                     PROG=$<TARGET_FILE:shim_nccl_cpu>
                     bash ${CMAKE_CURRENT_SOURCE_DIR}/comm/shim_nccl_cpu.sh)
    set_tests_properties(shim_nccl_cpu PROPERTIES TIMEOUT 60 LABELS cpu)
endif()
