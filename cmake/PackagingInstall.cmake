# CPACK_INSTALL_COMMANDS of the Debian package (cmake/Packaging.cmake):
#   cmake -DBUILD=DIR -DPREFIX=/usr -P PackagingInstall.cmake
# CPack calls it with the staging directory in the environment (CMAKE_INSTALL_PREFIX); it
# installs the build tree there as `DESTDIR=STAGING cmake --install DIR --prefix PREFIX --strip`
# would. This replaces CPack's own install of the project, which first builds the target
# `preinstall`, i.e. everything, tests and benchmarks included; the package needs only the
# targets that the target `deb` depends on.
if(NOT BUILD OR NOT PREFIX OR NOT DEFINED ENV{CMAKE_INSTALL_PREFIX})
  message(FATAL_ERROR "usage (from CPack): cmake -DBUILD=DIR -DPREFIX=/usr -P PackagingInstall.cmake")
endif()
set(ENV{DESTDIR} "$ENV{CMAKE_INSTALL_PREFIX}")
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD} --prefix ${PREFIX} --strip RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install ${BUILD} failed: ${rc}")
endif()
