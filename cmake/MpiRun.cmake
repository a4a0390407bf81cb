# SPDX-License-Identifier: MIT
# How this project's own tests, example and benchmark start MPI programs on one machine (included
# by the top-level CMakeLists.txt when MPI is found). Sets
#   ATTENTION_MPIEXEC              mpiexec and the flags that go before the rank count
#   ATTENTION_MPI_ENVIRONMENT      a list of NAME=value for ctest's ENVIRONMENT property
# and defines attention_mpi_command(<out-var> <ranks> <program> [args...]): the command list that
# runs <program> on <ranks> ranks.
#
# Open MPI refuses more ranks than cores unless --oversubscribe is given (the MPI tests start 4
# ranks on 2-core machines), and refuses to run as root unless --allow-run-as-root is (CI runs as
# root). The environment keeps it on this machine, with nothing probed on a network:
#   OMPI_MCA_btl=self,vader            loopback and shared-memory transports only (no TCP, no
#                                      InfiniBand)
#   OMPI_MCA_pml=ob1                   the point-to-point layer over those (not UCX, which would
#                                      look for network devices)
#   OMPI_MCA_btl_vader_single_copy_mechanism=none
#                                      shared memory copied through buffers, not by reading the
#                                      other process's memory (process_vm_readv), which containers
#                                      often forbid
#   OMPI_MCA_rmaps_base_oversubscribe=1, OMPI_MCA_hwloc_base_binding_policy=none
#                                      ranks may outnumber the cores and are not pinned, so that
#                                      tests running side by side under ctest -j do not share a
#                                      pinned core
#   OMPI_MCA_mpi_yield_when_idle=1     a rank waiting for a message yields its core rather than
#                                      spin (on a busy 2-core machine, 2 spinning ranks made the
#                                      2-rank test run 2 times slower)
# Other MPI implementations (MPICH) need none of this and get plain `mpiexec -n <ranks>`.

set(ATTENTION_MPIEXEC ${MPIEXEC_EXECUTABLE})
set(ATTENTION_MPI_ENVIRONMENT "")
if(MPIEXEC_EXECUTABLE)
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version
                  OUTPUT_VARIABLE mpiexec_version ERROR_VARIABLE mpiexec_version
                  RESULT_VARIABLE mpiexec_result)
  if(mpiexec_version MATCHES "Open MPI|OpenRTE")
    list(APPEND ATTENTION_MPIEXEC --oversubscribe)
    execute_process(COMMAND id -u OUTPUT_VARIABLE user_id OUTPUT_STRIP_TRAILING_WHITESPACE
                    ERROR_QUIET)
    if(user_id STREQUAL "0")
      list(APPEND ATTENTION_MPIEXEC --allow-run-as-root)
    endif()
    set(ATTENTION_MPI_ENVIRONMENT
        OMPI_MCA_btl=self,vader
        OMPI_MCA_pml=ob1
        OMPI_MCA_btl_vader_single_copy_mechanism=none
        OMPI_MCA_rmaps_base_oversubscribe=1
        OMPI_MCA_hwloc_base_binding_policy=none
        OMPI_MCA_mpi_yield_when_idle=1)
  endif()
else()
  message(STATUS "attention: MPI found but no mpiexec: the MPI tests and example will not run")
endif()

function(attention_mpi_command out ranks program)
  set(${out} ${ATTENTION_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} ${ranks} ${MPIEXEC_PREFLAGS} ${program}
      ${MPIEXEC_POSTFLAGS} ${ARGN} PARENT_SCOPE)
endfunction()
