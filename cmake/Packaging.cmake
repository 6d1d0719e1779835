# The Debian package of policyd, built by CPack (docs/packaging.md):
#   cmake --build build --target deb      -> build/policyd_<version>-<revision>_<arch>.deb
#
# Included at the end of the top-level CMakeLists.txt, after the project's own install rules
# (binaries, systemd unit, example policies). This file adds what a system installation
# needs besides them (the starter policy, man pages, shell completion, Debian's copyright
# and changelog) and the CPack configuration: control fields, dependencies computed by
# dpkg-shlibdeps, maintainer scripts and conffiles. The data files are in packaging/.
#
# Man pages are made with pandoc from Markdown: packaging/man/policyd.8.md,
# packaging/man/policyctl.8.md, and policyd.yaml(5) from the policy reference docs/policy.md.
# Without pandoc they are not built and `deb` refuses to package (cmake/PackagingCheck.cmake).

set(POLICYD_PACKAGING_DIR ${CMAKE_CURRENT_LIST_DIR}/../packaging)
get_filename_component(POLICYD_PACKAGING_DIR ${POLICYD_PACKAGING_DIR} ABSOLUTE)
set(POLICYD_PACKAGING_OUT ${CMAKE_BINARY_DIR}/packaging)
file(MAKE_DIRECTORY ${POLICYD_PACKAGING_OUT}/man)

# The Debian revision and the release date come from the first entry of the Debian changelog.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${POLICYD_PACKAGING_DIR}/debian/changelog)
file(STRINGS ${POLICYD_PACKAGING_DIR}/debian/changelog _changelog_head LIMIT_COUNT 1)
if(NOT _changelog_head MATCHES "^policyd \\(([^-)]+)-([^)]+)\\) ")
  message(FATAL_ERROR "packaging/debian/changelog: the first line is not 'policyd (VERSION-REVISION) ...'")
endif()
set(POLICYD_DEBIAN_REVISION ${CMAKE_MATCH_2})
if(NOT CMAKE_MATCH_1 STREQUAL PROJECT_VERSION)
  message(WARNING "packaging/debian/changelog: its latest entry is for ${CMAKE_MATCH_1}, the project is "
                  "${PROJECT_VERSION}: add an entry for ${PROJECT_VERSION}-1 before packaging")
endif()
file(STRINGS ${POLICYD_PACKAGING_DIR}/debian/changelog _changelog_sign REGEX "^ -- " LIMIT_COUNT 1)
set(POLICYD_RELEASE_DATE "")
if(_changelog_sign MATCHES ", ([0-9]+) ([A-Z][a-z][a-z]) ([0-9][0-9][0-9][0-9]) ")
  set(_day ${CMAKE_MATCH_1})
  set(_year ${CMAKE_MATCH_3})
  set(_months Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec)
  list(FIND _months ${CMAKE_MATCH_2} _month)
  math(EXPR _month "${_month} + 1")
  string(REGEX REPLACE "^([0-9])$" "0\\1" _month "${_month}")
  string(REGEX REPLACE "^([0-9])$" "0\\1" _day "${_day}")
  set(POLICYD_RELEASE_DATE "${_year}-${_month}-${_day}")
endif()

# ---------------------------------------------------------------------------------------
# Installed with the project (cmake --install too)

# /etc/policyd/policy.yaml: the starter policy, which changes no traffic. /etc for the
# prefixes /usr and / (as GNUInstallDirs has it), PREFIX/etc for any other; decided when
# installing, so that `cmake --install --prefix DIR` never writes outside DIR.
install(CODE "
  if(CMAKE_INSTALL_PREFIX MATCHES \"^/(usr/?)?$\")
    set(_policyd_etc /etc)
  else()
    set(_policyd_etc \"\${CMAKE_INSTALL_PREFIX}/etc\")
  endif()
  file(INSTALL DESTINATION \"\${_policyd_etc}/policyd\" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES \"${POLICYD_PACKAGING_DIR}/policy.yaml\")
")

# The generated files below are built by the target policyd_package_files (part of `all`) and
# installed OPTIONAL: an install from a tree where only some targets were built still works
# (tests/systemd/verify-unit.sh installs the build tree); the Debian package is checked to
# hold every one of them (cmake/PackagingCheck.cmake).
set(POLICYD_PACKAGE_FILES)

# cmake -DOUTPUT=FILE -P RunToFile.cmake -- PROGRAM ARGS...: the program's output into FILE.
set(_to_file ${CMAKE_CURRENT_LIST_DIR}/RunToFile.cmake)

find_program(PANDOC_EXECUTABLE pandoc)
set(POLICYD_POLICY_REFERENCE ${CMAKE_SOURCE_DIR}/docs/policy.md
    CACHE FILEPATH "The policy reference that becomes the man page policyd.yaml(5)")
if(PANDOC_EXECUTABLE)
  # policyd_man_page(NAME SECTION SOURCES...): pandoc, then gzip -9n (lintian: compressed at
  # the highest level, no timestamp).
  function(policyd_man_page name section)
    set(page ${POLICYD_PACKAGING_OUT}/man/${name}.${section})
    add_custom_command(
      OUTPUT ${page}.gz
      COMMAND ${PANDOC_EXECUTABLE} --standalone --from markdown --to man
              --lua-filter ${POLICYD_PACKAGING_DIR}/man/manpage.lua
              --metadata hyphenate=false --metadata "footer=policyd ${PROJECT_VERSION}"
              --metadata "date=${POLICYD_RELEASE_DATE}" --output ${page} ${ARGN}
      COMMAND ${CMAKE_COMMAND} -DOUTPUT=${page}.gz -P ${_to_file} -- gzip -9n -c ${page}
      DEPENDS ${ARGN} ${POLICYD_PACKAGING_DIR}/man/manpage.lua ${_to_file}
      COMMENT "man page ${name}(${section})"
      VERBATIM)
    install(FILES ${page}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section} OPTIONAL)
    set(POLICYD_PACKAGE_FILES ${POLICYD_PACKAGE_FILES} ${page}.gz PARENT_SCOPE)
  endfunction()
  policyd_man_page(policyd 8 ${POLICYD_PACKAGING_DIR}/man/policyd.8.md)
  policyd_man_page(policyctl 8 ${POLICYD_PACKAGING_DIR}/man/policyctl.8.md)
  if(EXISTS ${POLICYD_POLICY_REFERENCE})
    policyd_man_page(policyd.yaml 5 ${POLICYD_PACKAGING_DIR}/man/policyd.yaml.5.md ${POLICYD_POLICY_REFERENCE})
  else()
    message(WARNING "${POLICYD_POLICY_REFERENCE} does not exist: the man page policyd.yaml(5) is not built "
                    "and the Debian package cannot be made")
  endif()
else()
  message(WARNING "pandoc not found: the man pages are not built and the Debian package cannot be made "
                  "(scripts/setup-deps installs pandoc)")
endif()

# Shell completion for policyctl, printed by the policyctl just built.
foreach(shell bash zsh)
  set(script ${POLICYD_PACKAGING_OUT}/policyctl.${shell})
  add_custom_command(
    OUTPUT ${script}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${script} -P ${_to_file} -- $<TARGET_FILE:policyctl> completion ${shell}
    DEPENDS policyctl ${_to_file}
    COMMENT "policyctl completion ${shell}"
    VERBATIM)
  list(APPEND POLICYD_PACKAGE_FILES ${script})
endforeach()
install(FILES ${POLICYD_PACKAGING_OUT}/policyctl.bash DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions
        RENAME policyctl OPTIONAL)
install(FILES ${POLICYD_PACKAGING_OUT}/policyctl.zsh DESTINATION ${CMAKE_INSTALL_DATADIR}/zsh/vendor-completions
        RENAME _policyctl OPTIONAL)

# Debian's copyright and changelog (gzip -9n) in the package's documentation directory.
set(_changelog ${POLICYD_PACKAGING_OUT}/changelog.Debian.gz)
add_custom_command(
  OUTPUT ${_changelog}
  COMMAND ${CMAKE_COMMAND} -DOUTPUT=${_changelog} -P ${_to_file} -- gzip -9n -c ${POLICYD_PACKAGING_DIR}/debian/changelog
  DEPENDS ${POLICYD_PACKAGING_DIR}/debian/changelog ${_to_file}
  VERBATIM)
list(APPEND POLICYD_PACKAGE_FILES ${_changelog})
install(FILES ${_changelog} DESTINATION ${CMAKE_INSTALL_DOCDIR} OPTIONAL)
install(FILES ${POLICYD_PACKAGING_DIR}/debian/copyright DESTINATION ${CMAKE_INSTALL_DOCDIR})

add_custom_target(policyd_package_files ALL DEPENDS ${POLICYD_PACKAGE_FILES})

# ---------------------------------------------------------------------------------------
# The Debian package (CPack DEB)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME policyd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "policyd maintainers <maintainers@users.noreply.h-seed-ba1e5503.example>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# The staging install: cmake --install with --strip (the binaries of a RelWithDebInfo build
# carry their debug info), without building every target first (cmake/PackagingInstall.cmake).
set(CPACK_INSTALL_CMAKE_PROJECTS "")
set(CPACK_INSTALL_COMMANDS "${CMAKE_COMMAND} -DBUILD=${CMAKE_BINARY_DIR} -DPREFIX=${CPACK_PACKAGING_INSTALL_PREFIX} -P ${CMAKE_CURRENT_LIST_DIR}/PackagingInstall.cmake")
set(CPACK_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "L7 policy enforcement in eBPF for Linux gateway hosts")
# (lines of at most 79 characters: lintian's extended-description-line-too-long)
set(CPACK_PACKAGE_DESCRIPTION
    "policyd enforces HTTP host and path rules, TLS SNI rules, JWT requirements
and rate limits on the traffic a Linux gateway host forwards, in eBPF programs
at TC ingress: requests are judged in the kernel, without a user-space proxy
hop. One YAML policy file is compiled into BPF programs and tables; changes
are applied as one transaction, and the chain keeps enforcing while the daemon
restarts.

This package contains the daemon policyd with its systemd unit, the command
line tool policyctl, a starter policy that changes no traffic until it is
edited, and example policies.")

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # policyd_VERSION-REVISION_ARCH.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE ${POLICYD_DEBIAN_REVISION})
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
# Libraries: what dpkg-shlibdeps finds the binaries linked against. Besides them: the
# postinst creates the group and /run/policyd with systemd-sysusers and systemd-tmpfiles.
# (policyd runs no other program: it speaks netlink and bpf(2) itself.)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "systemd | systemd-standalone-sysusers, systemd | systemd-standalone-tmpfiles")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${POLICYD_PACKAGING_DIR}/debian/conffiles ${POLICYD_PACKAGING_DIR}/debian/postinst
    ${POLICYD_PACKAGING_DIR}/debian/prerm ${POLICYD_PACKAGING_DIR}/debian/postrm)

# After the staging install, before packing: the unit where Debian 12 keeps units, naming
# /usr/sbin/policyd; and a check that nothing the package needs is missing.
set(POLICYD_SBIN ${CPACK_PACKAGING_INSTALL_PREFIX}/sbin)
configure_file(${CMAKE_SOURCE_DIR}/systemd/policyd.service.in ${POLICYD_PACKAGING_OUT}/policyd.service @ONLY)
set(POLICYD_SBIN ${CMAKE_INSTALL_FULL_SBINDIR})  # as the top-level CMakeLists.txt set it
set(CPACK_POLICYD_UNIT ${POLICYD_PACKAGING_OUT}/policyd.service)
set(CPACK_PRE_BUILD_SCRIPTS ${CMAKE_CURRENT_LIST_DIR}/PackagingCheck.cmake)

include(CPack)

# cmake --build build --target deb: what the package holds, then the package, in the build directory.
add_custom_target(deb
  COMMAND ${CMAKE_CPACK_COMMAND} -G DEB --config ${CMAKE_BINARY_DIR}/CPackConfig.cmake
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR}
  COMMENT "Debian package"
  VERBATIM)
add_dependencies(deb policyd policyctl policyd_package_files)
