# bpf_object(<name> <source>): compiles bpf/<name>.bpf.c with clang for the BPF target,
# generates <name>.skel.h with bpftool, and defines the INTERFACE target <name>_skel that
# carries the include path of the generated skeleton. Nothing generated leaves the build tree.
find_program(BPF_CLANG NAMES clang-19 clang-16 clang-14 clang REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)
execute_process(COMMAND ${CMAKE_C_COMPILER} -print-multiarch
                OUTPUT_VARIABLE BPF_MULTIARCH OUTPUT_STRIP_TRAILING_WHITESPACE)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64")
  set(BPF_TARGET_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64")
  set(BPF_TARGET_ARCH arm64)
else()
  set(BPF_TARGET_ARCH ${CMAKE_SYSTEM_PROCESSOR})
endif()

set(BPF_OUT_DIR ${CMAKE_BINARY_DIR}/bpf)
file(MAKE_DIRECTORY ${BPF_OUT_DIR})

set(BPF_WERROR)
if(POLICYD_WERROR)
  set(BPF_WERROR -Werror)
endif()

function(bpf_object name source)
  set(obj ${BPF_OUT_DIR}/${name}.bpf.o)
  set(skel ${BPF_OUT_DIR}/${name}.skel.h)
  file(GLOB bpf_headers ${CMAKE_SOURCE_DIR}/bpf/include/*.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_${BPF_TARGET_ARCH}
            -Wall -Wextra ${BPF_WERROR} -Wno-unused-parameter
            -I${CMAKE_SOURCE_DIR}/bpf/include -I/usr/include/${BPF_MULTIARCH}
            ${ARGN}
            -c ${CMAKE_CURRENT_SOURCE_DIR}/${source} -o ${obj}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${source} ${bpf_headers}
    COMMENT "BPF ${name}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${name}_bpf > ${skel}
    DEPENDS ${obj}
    COMMENT "skeleton ${name}.skel.h"
    VERBATIM)
  add_custom_target(${name}_skel_gen DEPENDS ${skel})
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  target_include_directories(${name}_skel INTERFACE ${BPF_OUT_DIR} ${CMAKE_SOURCE_DIR}/bpf/include)
endfunction()
