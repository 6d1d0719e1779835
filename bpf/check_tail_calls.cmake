# Every tail call of the BPF programs goes through pd_tail_call (include/pd_common.h), whose
# slot comes from pd_slot (pd_abi.h), the function the controller fills the PROG_ARRAY with:
# a tail call written anywhere else could compute its slot otherwise and land in another
# stage or generation. So bpf_tail_call may be named once in bpf/ (*.c, include/*.h), there;
# any other mention, a comment's or a macro's too, fails the build.
# cmake -DBPF_DIR=<source bpf/> -DSTAMP=<file written when the check passes> -P check_tail_calls.cmake
file(GLOB sources ${BPF_DIR}/*.c ${BPF_DIR}/include/*.h)
set(helper ${BPF_DIR}/include/pd_common.h)
set(in_helper 0)
set(elsewhere "")
foreach(src IN LISTS sources)
  file(STRINGS ${src} hits REGEX "bpf_tail_call")
  foreach(hit IN LISTS hits)
    string(STRIP "${hit}" hit)
    if(src STREQUAL helper AND hit MATCHES "^bpf_tail_call\\(skb, &pd_progs, pd_slot\\(gen, stage\\)\\);$")
      math(EXPR in_helper "${in_helper} + 1")
    else()
      file(RELATIVE_PATH rel ${BPF_DIR}/.. ${src})
      string(APPEND elsewhere "\n  ${rel}: ${hit}")
    endif()
  endforeach()
endforeach()
if(NOT elsewhere STREQUAL "")
  message(FATAL_ERROR "bpf_tail_call other than pd_tail_call's bpf_tail_call(skb, &pd_progs, pd_slot(gen, stage)) "
                      "in include/pd_common.h (call pd_tail_call, or pd_tail with a context; a comment says "
                      "\"tail call\"):${elsewhere}")
endif()
if(NOT in_helper EQUAL 1)
  message(FATAL_ERROR "pd_tail_call in bpf/include/pd_common.h no longer makes the one tail call "
                      "(bpf_tail_call(skb, &pd_progs, pd_slot(gen, stage))): found ${in_helper}")
endif()
file(TOUCH ${STAMP})
