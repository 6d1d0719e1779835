// Not compiled: cmake/LayerCheck.cmake must refuse this tree (test layer_check_bites).
#include "chain/compile.hpp"
#include <bpf/libbpf.h>
