// Not compiled: cmake/LayerCheck.cmake must refuse this tree (test layer_check_bites).
#include "chain/base/result.hpp"
#include "chain/kernel/dataplane.hpp"
