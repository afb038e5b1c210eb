# ctest -L cluster: bench/cluster_test.sh on a simulated 2-host, 1 Gbit/s cluster (network
# namespaces; issue 9 item 5). Correctness only (#wrong 0, bitwise-equal outputs across ranks).
# The script exits 77 with a SKIP line when it cannot build a cluster here (not root, no usable
# `ip netns`, no tc or mpirun): ctest reports the test as skipped, not failed.
if(TERSE_HAVE_MPI AND TERSE_ENABLE_TESTS)
    add_test(NAME cluster_2host_1gbit
             COMMAND ${CMAKE_CURRENT_LIST_DIR}/cluster_test.sh $<TARGET_FILE:terse-bench>
                     ${CMAKE_CURRENT_BINARY_DIR}/cluster_test)
    set_tests_properties(cluster_2host_1gbit PROPERTIES LABELS cluster TIMEOUT 300 RUN_SERIAL ON
                         SKIP_RETURN_CODE 77)
endif()
