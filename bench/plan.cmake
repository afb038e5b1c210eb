# terse-plan-bench: the scheduler's benchmark (planning time; adaptive vs uniform bytes on the
# ResNet-50 and GPT-2-small shapes with statistics from bench/plan_data). Included from
# bench/CMakeLists.txt.
add_executable(terse-plan-bench ${CMAKE_CURRENT_LIST_DIR}/bench_plan.c)
target_link_libraries(terse-plan-bench PRIVATE terse_static)
