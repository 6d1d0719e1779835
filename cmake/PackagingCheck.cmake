# CPACK_PRE_BUILD_SCRIPTS of the Debian package (cmake/Packaging.cmake): runs in CPack after the
# staging install, before the package is made from it.
#
# 1. The systemd unit: the project installs it to PREFIX/lib/systemd/system, naming the
#    policyd of the prefix the build was configured for. Debian 12 keeps units in
#    /lib/systemd/system (lintian: systemd-service-file-outside-lib), and the package's
#    policyd is /usr/sbin/policyd: the unit rendered for the package replaces it.
# 2. Nothing the package needs is missing (pandoc or docs/policy.md absent at configure time
#    leave man pages out): refuse to make a package without it.

set(stage "${CPACK_TEMPORARY_INSTALL_DIRECTORY}")
set(prefix "${CPACK_PACKAGING_INSTALL_PREFIX}")

set(installed "${stage}${prefix}/lib/systemd/system/policyd.service")
if(NOT EXISTS "${installed}")
  message(FATAL_ERROR "policyd package: the install rules put no unit at ${prefix}/lib/systemd/system/policyd.service")
endif()
file(REMOVE "${installed}")
foreach(dir "${stage}${prefix}/lib/systemd/system" "${stage}${prefix}/lib/systemd")
  file(GLOB left "${dir}/*")
  if(NOT left)
    file(REMOVE_RECURSE "${dir}")
  endif()
endforeach()
# (file(INSTALL) would prepend DESTDIR, which CPack has set to the staging directory)
file(MAKE_DIRECTORY "${stage}/lib/systemd/system")
file(COPY_FILE "${CPACK_POLICYD_UNIT}" "${stage}/lib/systemd/system/policyd.service")
file(CHMOD "${stage}/lib/systemd/system/policyd.service" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

set(missing)
foreach(file
        usr/sbin/policyd usr/sbin/policyctl lib/systemd/system/policyd.service etc/policyd/policy.yaml
        usr/lib/sysusers.d/policyd.conf usr/lib/tmpfiles.d/policyd.conf
        usr/share/man/man8/policyd.8.gz usr/share/man/man8/policyctl.8.gz usr/share/man/man5/policyd.yaml.5.gz
        usr/share/bash-completion/completions/policyctl usr/share/zsh/vendor-completions/_policyctl
        usr/share/doc/policyd/copyright usr/share/doc/policyd/changelog.Debian.gz)
  if(NOT EXISTS "${stage}/${file}")
    list(APPEND missing "/${file}")
  endif()
endforeach()
if(missing)
  list(JOIN missing "\n  " missing)
  message(FATAL_ERROR "policyd package: missing from the staging install:\n  ${missing}\n"
                      "(man pages need pandoc and docs/policy.md when CMake configures the build; "
                      "build the target policyd_package_files, or use the target deb)")
endif()
