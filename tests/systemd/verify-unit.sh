#!/bin/bash
# The unit as `cmake --install` puts it (into a temporary prefix): systemd-analyze verify
# accepts it, it names the installed binary, and it is what POLICY/DESIGN promise
# (Type=notify, reload by SIGHUP, restart on failure, a RuntimeDirectory for the socket).
set -euo pipefail
build=$1
command -v systemd-analyze > /dev/null ||
  { echo "systemd_unit needs systemd-analyze (Debian package systemd; scripts/setup-deps installs it)" >&2; exit 1; }
prefix=$(mktemp -d /tmp/policyd-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake -DCMAKE_INSTALL_PREFIX="$prefix" -P "$build/cmake_install.cmake" > /dev/null
# the unit written for this prefix (configure_file used the build's prefix): point it here
unit="$prefix/lib/systemd/system/policyd.service"
test -f "$unit" || { echo "no unit at $unit"; exit 1; }
test -x "$prefix/sbin/policyd" || { echo "no policyd in $prefix/sbin"; exit 1; }
test -x "$prefix/sbin/policyctl" || { echo "no policyctl in $prefix/sbin"; exit 1; }
ls "$prefix"/share/doc/policyd/examples/*.yaml > /dev/null
sed -i "s#^ExecStart=[^ ]*/policyd#ExecStart=$prefix/sbin/policyd#" "$unit"
for want in '^Type=notify$' '^ExecReload=/bin/kill -HUP \$MAINPID$' '^Restart=on-failure$' \
            '^RuntimeDirectory=policyd$' '^ProtectSystem=strict$' '^ReadWritePaths=/sys/fs/bpf$'; do
  grep -q "$want" "$unit" || { echo "unit lacks $want"; exit 1; }
done
systemd-analyze verify "$unit"
echo "unit verified: $unit"
