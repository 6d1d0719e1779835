# The controller's layers (chain/CMakeLists.txt): a source may include its own layer and the
# ones below it, never one above. Run at every build (target layer_check) and as a test on a
# tree with an upward include (tests/chain/CMakeLists.txt), so the rule is seen to bite.
#
#   cmake -DSOURCE_DIR=<repository root> -P cmake/LayerCheck.cmake
#
# Layers, lowest first: base (chain/base/), config (config/), abi (bpf/include/pd_abi.h),
# jwt (chain/jwt/), compile (chain/*, chain/stages/), ctl (what policyctl is built from:
# daemon/policyctl.cpp, daemon/completion.*, daemon/control.hpp), kernel (chain/kernel/, libbpf,
# skeletons), daemon (daemon/). ctl and kernel both stand on compile and not on each other:
# policyctl links no libbpf.
cmake_minimum_required(VERSION 3.22)
if(NOT SOURCE_DIR)
  message(FATAL_ERROR "LayerCheck: pass -DSOURCE_DIR=<repository root>")
endif()

set(rank_base 0)
set(rank_config 1)
set(rank_abi 1)
set(rank_jwt 2)
set(rank_compile 3)
set(rank_ctl 4)
set(rank_kernel 4)
set(rank_daemon 5)

# The layer of a file, by its path relative to the root ("" for files outside the layers).
function(layer_of_path path out)
  if(path MATCHES "^chain/base/")
    set(l base)
  elseif(path MATCHES "^config/")
    set(l config)
  elseif(path MATCHES "^chain/jwt/")
    set(l jwt)
  elseif(path MATCHES "^chain/kernel/")
    set(l kernel)
  elseif(path MATCHES "^chain/")
    set(l compile)
  elseif(path MATCHES "^daemon/(policyctl\\.cpp|completion\\.(hpp|cpp)|control\\.hpp)$")
    set(l ctl)
  elseif(path MATCHES "^daemon/")
    set(l daemon)
  else()
    set(l "")
  endif()
  set(${out} "${l}" PARENT_SCOPE)
endfunction()

# The layer an #include names ("" for the standard library and other outside headers).
function(layer_of_include inc out)
  if(inc MATCHES "^<bpf/" OR inc MATCHES "\\.skel\\.h\"$")
    set(l kernel)
  elseif(inc MATCHES "^\"pd_[a-z_]*\\.h\"$" OR inc MATCHES "^\"abi/")
    set(l abi)
  elseif(inc MATCHES "^\"([a-z_/]+\\.hpp)\"$")
    layer_of_path("${CMAKE_MATCH_1}" l)
  else()
    set(l "")
  endif()
  set(${out} "${l}" PARENT_SCOPE)
endfunction()

file(GLOB_RECURSE sources RELATIVE ${SOURCE_DIR}
     ${SOURCE_DIR}/chain/*.hpp ${SOURCE_DIR}/chain/*.cpp
     ${SOURCE_DIR}/config/*.hpp ${SOURCE_DIR}/config/*.cpp
     ${SOURCE_DIR}/daemon/*.hpp ${SOURCE_DIR}/daemon/*.cpp)
set(violations "")
foreach(src ${sources})
  layer_of_path("${src}" from)
  if(from STREQUAL "")
    continue()
  endif()
  file(STRINGS ${SOURCE_DIR}/${src} includes REGEX "^[ \t]*#[ \t]*include[ \t]")
  foreach(line ${includes})
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*([<\"][^>\"]*[>\"]).*" "\\1" inc "${line}")
    layer_of_include("${inc}" to)
    if(to STREQUAL "" OR to STREQUAL from)
      continue()
    endif()
    # side by side, not above one another: ctl (policyctl) and kernel
    if((from STREQUAL "ctl" AND to STREQUAL "kernel") OR (from STREQUAL "kernel" AND to STREQUAL "ctl"))
      string(APPEND violations "  ${src}: ${inc} (${from} -> ${to}: policyctl must not need the kernel layer)\n")
    elseif(${rank_${to}} GREATER ${rank_${from}} OR (from STREQUAL "config" AND to STREQUAL "abi"))
      string(APPEND violations "  ${src}: ${inc} (the ${from} layer includes the ${to} layer above it)\n")
    endif()
  endforeach()
endforeach()
list(LENGTH sources n)
if(violations)
  message(FATAL_ERROR "LayerCheck: includes against the layering (chain/CMakeLists.txt):\n${violations}")
endif()
message(STATUS "LayerCheck: ${n} sources, no upward include")
