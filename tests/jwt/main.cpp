// Catch2 entry point for jwt_tests.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
