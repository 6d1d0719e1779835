#!/usr/bin/env bash
# The Debian package, end to end (docs/packaging.md):
#   1. builds it from the build tree (the targets it holds, then cpack) and runs lintian on it:
#      no error allowed;
#   2. installs it with dpkg, starting no service (no systemd runs here, and a policy-rc.d
#      refuses any start besides), and checks what it installed: binaries, unit, man pages,
#      completion (for real, in bash), conffile, group, /run/policyd;
#   3. runs the INSTALLED policyd and policyctl on a gateway between a client and nginx
#      (three network namespaces of its own, scripts/netns-topology): one request allowed, one
#      denied; policyd stopped, the chain detached;
#   4. runs the installed policyd with the installed starter policy as the service would
#      (default config, pin dir and socket; in a mount namespace of its own, where /sys/fs/bpf
#      is a fresh bpffs, and an empty network namespace): it attaches nothing; the socket
#      serves the group policyd; stopped, its chain stays pinned, and the purge removes it;
#   5. purges the package and checks that nothing of it is left.
#
# Usage: package-test.sh BUILD_DIR SOURCE_DIR   (as root; CTest: package_deb)
# Exit: 0 passed, 1 failed. A machine where policyd is installed already fails the test, naming
# what is there (the test never touches an installation it did not make, and never skips).
#
# Everything it creates (package installation, group, policy-rc.d, namespaces, nginx, policyd,
# mounts, temp dir) is removed when it exits, also on failure or interruption.
set -euo pipefail

die() { echo "package-test: FAIL: $*" >&2; exit 1; }
# The pins in bpffs directory $1: its entries but the kernel's own (maps.debug, progs.debug).
pins() {
  local e
  for e in "$1"/* "$1"/.[!.]*; do
    [ -e "$e" ] || continue
    case ${e##*/} in maps.debug|progs.debug) ;; *) echo "${e##*/}" ;; esac
  done
}
say() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }

# ------------------------------------------------------------------------------------------
# Phase 4 runs in a mount namespace of its own: the script calls itself.
#   package-test.sh --starter-phase WORK
if [ "${1:-}" = --starter-phase ]; then
  work=$2
  pid=""
  stop_daemon() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    [ -z "$pid" ] || wait "$pid" 2>/dev/null || true
    pid=""
  }
  trap stop_daemon EXIT
  # A fresh bpffs where the service pins: this namespace's own, gone with it.
  mount -t bpf bpf /sys/fs/bpf
  log=$work/starter.log
  # Exactly the unit's command (ExecStart), but no metrics endpoint, in an empty network namespace.
  unshare --net /usr/sbin/policyd --config /etc/policyd/policy.yaml --metrics off >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 150); do   # up to 15 s
    grep -q "ready: generation" "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q "ready: generation" "$log" || { cat "$log" >&2; die "policyd with the starter policy did not become ready"; }
  grep -q "no interface matches CHANGE-ME; nothing is enforced" "$log" ||
    { cat "$log" >&2; die "policyd with the starter policy did not say that it attaches to nothing"; }
  ok "the installed policyd runs the starter policy: $(grep -o 'no interface matches CHANGE-ME[^"]*' "$log" | head -n1)"
  status=$(timeout 10 /usr/sbin/policyctl status) || die "policyctl status (default socket) failed"
  grep -q '^interfaces: *(none)' <<<"$status" || { echo "$status" >&2; die "policyctl status: interfaces are not (none)"; }
  ok "policyctl status on /run/policyd/policyd.sock: interfaces (none)"

  # The socket as the service leaves it: root:policyd 0660 in /run/policyd (0755, tmpfiles.d).
  [ "$(stat -c '%a %U %G' /run/policyd/policyd.sock)" = "660 root policyd" ] ||
    die "/run/policyd/policyd.sock is $(stat -c '%a %U %G' /run/policyd/policyd.sock), not 660 root policyd"
  gid=$(getent group policyd | cut -d: -f3)
  timeout 10 setpriv --reuid=65534 --regid="$gid" --clear-groups /usr/sbin/policyctl status >/dev/null ||
    die "a member of the group policyd (uid 65534, gid $gid) cannot use policyctl status"
  rc=0
  timeout 10 setpriv --reuid=65534 --regid=65534 --clear-groups /usr/sbin/policyctl status >/dev/null 2>&1 || rc=$?
  [ "$rc" = 3 ] || die "a user outside the group policyd got exit status $rc from policyctl status, not 3"
  ok "the control socket serves the group policyd (uid 65534 with it: served; without it: exit 3)"

  stop_daemon
  [ -n "$(pins /sys/fs/bpf/policyd)" ] || die "policyd stopped and its chain is not pinned at /sys/fs/bpf/policyd"
  ok "policyd stopped (SIGTERM); its chain stays pinned at /sys/fs/bpf/policyd, by design"

  say "dpkg --purge policyd (prerm takes the pinned chain down)"
  DEBIAN_FRONTEND=noninteractive timeout 120 dpkg --purge policyd
  [ ! -e /sys/fs/bpf/policyd ] || die "the purge left the chain pinned at /sys/fs/bpf/policyd"
  ok "the purge unpinned /sys/fs/bpf/policyd"
  exit 0
fi

# ------------------------------------------------------------------------------------------
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "needs root (dpkg, network namespaces, bpffs)"
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
self=$(readlink -f "$0")
# One package test at a time on this machine (from any build tree): the rest runs under a lock
# on this script, held by flock(1) alone (-o: no child of the test inherits it).
if [ -z "${POLICYD_PACKAGE_TEST_LOCKED:-}" ]; then
  POLICYD_PACKAGE_TEST_LOCKED=1 exec flock -o -w 300 "$self" "$self" "$@"
fi
for tool in cpack lintian dpkg dpkg-deb man setpriv unshare curl nginx bash; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/setup-deps installs what the tests need)"
done

# Paths the package installs (or that its scripts make): none may exist before, none after.
readonly PACKAGE_PATHS=(
  /usr/sbin/policyd /usr/sbin/policyctl /etc/policyd /lib/systemd/system/policyd.service
  /usr/lib/systemd/system/policyd.service /usr/lib/sysusers.d/policyd.conf
  /usr/lib/tmpfiles.d/policyd.conf /usr/share/doc/policyd /usr/share/man/man8/policyd.8.gz
  /usr/share/man/man8/policyctl.8.gz /usr/share/man/man5/policyd.yaml.5.gz
  /usr/share/bash-completion/completions/policyctl /usr/share/zsh/vendor-completions/_policyctl
  /run/policyd /etc/systemd/system/multi-user.target.wants/policyd.service
  /etc/systemd/system/policyd.service /var/lib/systemd/deb-systemd-helper-enabled/policyd.service.dsh-also
  /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/policyd.service
  /var/lib/systemd/deb-systemd-helper-masked/policyd.service
)

status=$(dpkg-query -W -f='${db:Status-Abbrev}' policyd 2>/dev/null || true)
if [ -n "$status" ] && [ "${status:1:1}" != n ]; then
  die "the package policyd is on this machine already (dpkg status '$status'); this test installs and purges it, so it does not run here: purge it first (apt purge policyd)"
fi
for p in "${PACKAGE_PATHS[@]}"; do
  if [ -e "$p" ] || [ -L "$p" ]; then
    die "$p exists already (a policyd installed without the package?); this test installs and purges policyd, so it does not run here: remove it first"
  fi
done

# ------------------------------------------------------------------------------------------
# Setup and cleanup

name=""
for _ in 1 2 3 4 5; do   # a fixed prefix and a unique suffix; at most 5 tries
  candidate="pkg$(printf %05d $(( (RANDOM * 32768 + RANDOM + $$) % 100000 )))"
  [ -e "/run/netns/$candidate-c" ] || [ -e "/run/netns/$candidate-g" ] ||
    [ -e "/run/netns/$candidate-s" ] || { name=$candidate; break; }
done
[ -n "$name" ] || die "no free topology name"

work=$(mktemp -d /tmp/policyd-package-test.XXXXXX)
chmod 755 "$work"   # the socket's directory: uid 65534 must reach the socket
group_existed=0
getent group policyd >/dev/null && group_existed=1
created_policy_rc=0
installed=0
topology_up=0
nginx_up=0
mounted=0
policyd_pid=""

# shellcheck disable=SC2317  # a trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  set +e
  if [ -n "$policyd_pid" ] && kill -0 "$policyd_pid" 2>/dev/null; then
    kill -TERM "$policyd_pid"
    for _ in $(seq 1 50); do kill -0 "$policyd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$policyd_pid" 2>/dev/null
    wait "$policyd_pid" 2>/dev/null
  fi
  if [ "$topology_up" = 1 ] && [ "$mounted" = 1 ] && [ -n "$(pins "$work/bpf")" ]; then
    # the chain outlives policyd by design: take it down (with the source tree's policyd if
    # the package is gone already)
    detach=/usr/sbin/policyd
    [ -x "$detach" ] || detach=$build/daemon/policyd
    timeout 15 ip netns exec "$name-g" "$detach" --detach --pin-dir "$work/bpf" >/dev/null 2>&1
  fi
  [ "$nginx_up" = 1 ] && timeout 15 "$src/scripts/lib/nginx-backend" stop "$name" "$work/nginx"
  [ "$topology_up" = 1 ] && timeout 30 "$src/scripts/netns-topology" down "$name"
  if [ "$mounted" = 1 ]; then umount "$work/bpf" 2>/dev/null || umount -l "$work/bpf"; fi
  if [ "$installed" = 1 ] && [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' policyd 2>/dev/null)" == ?[!n]* ]]; then
    DEBIAN_FRONTEND=noninteractive timeout 120 dpkg --purge policyd >/dev/null 2>&1 ||
      echo "package-test: cleanup: dpkg --purge policyd failed" >&2
  fi
  if [ "$group_existed" = 0 ] && getent group policyd >/dev/null; then
    groupdel policyd || echo "package-test: cleanup: groupdel policyd failed" >&2
  fi
  [ "$created_policy_rc" = 1 ] && rm -f /usr/sbin/policy-rc.d
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------------------------------------
say "1. Package: build (cpack) and lintian"
timeout 1200 cmake --build "$build" --target policyd policyctl policyd_package_files -- -j2 >"$work/build.log" 2>&1 ||
  { tail -n 40 "$work/build.log" >&2; die "building the package's targets failed"; }
timeout 300 cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/cpack" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log" >&2; die "cpack failed"; }
deb=$(find "$work/cpack" -maxdepth 1 -name 'policyd_*.deb')
if [ -z "$deb" ] || [ "$(wc -l <<<"$deb")" != 1 ]; then die "cpack made no single policyd_*.deb: $deb"; fi
ok "$(basename "$deb")"

lintian_out=$(timeout 300 lintian --fail-on error --info --pedantic --color never "$deb" 2>&1) || lintian_rc=$?
printf '%s\n' "$lintian_out" | grep -v '^N:' | sed 's/^/   lintian: /'
[ "${lintian_rc:-0}" = 0 ] || die "lintian failed ($lintian_rc)"
if grep -q '^E: ' <<<"$lintian_out"; then die "lintian reports errors"; fi
ok "lintian: no errors"

version=$(sed -n 's/^project(policyd VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
[ "$(dpkg-deb -f "$deb" Package)" = policyd ] || die "Package is not policyd"
[[ "$(dpkg-deb -f "$deb" Version)" == "$version"-* ]] || die "Version $(dpkg-deb -f "$deb" Version) is not $version-REVISION"
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libbpf1 libc6 libsystemd0 libyaml-cpp; do   # computed by dpkg-shlibdeps
  grep -q "$lib" <<<"$depends" || die "Depends lacks $lib: $depends"
done
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = /etc/policyd/policy.yaml ] ||
  die "/etc/policyd/policy.yaml is not the conffile"
contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's#^\.##')
for example in "$src"/config/examples/*.yaml; do
  grep -qx "/usr/share/doc/policyd/examples/$(basename "$example")" <<<"$contents" ||
    die "the example $(basename "$example") is not in the package"
done
ok "control fields, conffiles, shlibs dependencies, every example policy"

# ------------------------------------------------------------------------------------------
say "2. Install (no service is started) and what was installed"
if [ ! -e /usr/sbin/policy-rc.d ]; then
  # invoke-rc.d and deb-systemd-invoke ask it: 101 = no service may be started
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  created_policy_rc=1
fi
installed=1
DEBIAN_FRONTEND=noninteractive timeout 120 dpkg -i "$deb" >"$work/dpkg-install.log" 2>&1 ||
  { cat "$work/dpkg-install.log" >&2; die "dpkg -i failed"; }
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' policyd)" = "ii " ] || die "policyd is not installed after dpkg -i"
! pgrep -f '^/usr/sbin/policyd' >/dev/null || die "installing started policyd"
ok "dpkg -i: installed; no policyd running"

for f in /usr/sbin/policyd /usr/sbin/policyctl; do [ -x "$f" ] || die "$f is not executable"; done
[ "$(/usr/sbin/policyd --version)" = "policyd $version" ] || die "policyd --version is not 'policyd $version'"
unit=/lib/systemd/system/policyd.service
grep -qx 'ExecStart=/usr/sbin/policyd --config /etc/policyd/policy.yaml' "$unit" ||
  die "the unit does not run /usr/sbin/policyd: $(grep ExecStart "$unit")"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit" || die "systemd-analyze verify $unit"
fi
[ -L /etc/systemd/system/multi-user.target.wants/policyd.service ] ||
  die "the unit was not enabled (deb-systemd-helper enable)"
ok "binaries, version $version, unit (ExecStart /usr/sbin/policyd; verified; enabled)"

for page in policyd.8 policyctl.8 policyd.yaml.5; do
  section=${page##*.} topic=${page%.*}
  path=$(man -w "$section" "$topic") || die "man -w $section $topic finds nothing"
  [ "$path" = "/usr/share/man/man$section/$page.gz" ] || die "man -w $section $topic is $path"
  warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$path" 2>&1 >/dev/null)
  [ -z "$warnings" ] || die "man page $page: $warnings"
  text=$(MANWIDTH=100 man -l "$path" 2>/dev/null | col -b)
  grep -q "^       $topic - " <<<"$text" || die "man page $page has no NAME line for $topic"
done
ok "man pages policyd(8), policyctl(8), policyd.yaml(5): found by man, render without warnings"

comp=/usr/share/bash-completion/completions/policyctl
diff <(/usr/sbin/policyctl completion bash) "$comp" >/dev/null || die "$comp is not what policyctl completion bash prints"
commands=$(/usr/sbin/policyctl --help | sed -n '/^Subcommands:/,$p' | awk 'NR > 1 && /^  [a-z]/ {print $1}' | sort | xargs)
completed=$(bash -c 'source "$1"; COMP_WORDS=(policyctl ""); COMP_CWORD=1; _policyctl; printf "%s\n" "${COMPREPLY[@]}"' _ "$comp" |
              sort | xargs)
[ -n "$commands" ] || die "policyctl --help lists no commands"
[ "$completed" = "$commands" ] || die "bash completes 'policyctl ' to '$completed', not '$commands'"
completed=$(cd "$src/config/examples" &&
            bash -c 'source "$1"; COMP_WORDS=(policyctl validate h); COMP_CWORD=2; _policyctl; printf "%s\n" "${COMPREPLY[@]}"' _ "$comp")
[ "$completed" = http-basic.yaml ] || die "bash completes 'policyctl validate h' to '$completed', not http-basic.yaml"
ok "bash completion: the binary's script; completes the commands ($commands) and policy files"

[ "$(dpkg-query -W -f='${Conffiles}' policyd | awk '{print $1}' | xargs)" = /etc/policyd/policy.yaml ] ||
  die "dpkg does not list /etc/policyd/policy.yaml as the conffile"
/usr/sbin/policyctl validate /etc/policyd/policy.yaml || die "the starter policy does not validate"
ok "conffile /etc/policyd/policy.yaml, valid"

entry=$(getent group policyd) || die "the group policyd does not exist"
gid=$(cut -d: -f3 <<<"$entry")
[ "$gid" -lt 1000 ] || die "the group policyd (gid $gid) is not a system group"
[ "$(stat -c '%a %U %G' /run/policyd)" = "755 root root" ] ||
  die "/run/policyd is $(stat -c '%a %U %G' /run/policyd 2>&1), not 755 root root"
ok "system group policyd (gid $gid); /run/policyd 0755 root:root"

# ------------------------------------------------------------------------------------------
say "3. The installed policyd and policyctl on a gateway ($name-c -> $name-g -> $name-s, nginx)"
"$src/scripts/netns-topology" up "$name"
topology_up=1
timeout 30 "$src/scripts/lib/nginx-backend" start "$name" "$work/nginx"
nginx_up=1
mkdir -p "$work/bpf"
mount -t bpf bpf "$work/bpf"
mounted=1

cat > "$work/policy.yaml" <<'YAML'
version: 1
interfaces: ["gw-c"]
listeners:
  - name: web
    port: 80
    protocol: http
chain: [host, path]
default_action: deny
fail_mode: closed
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/allowed" }
        action: allow
YAML
/usr/sbin/policyctl validate "$work/policy.yaml" >/dev/null || die "policyctl validate refuses the test policy"

ip netns exec "$name-g" /usr/sbin/policyd --config "$work/policy.yaml" --pin-dir "$work/bpf" \
  --socket "$work/policyd.sock" --metrics off >"$work/policyd.log" 2>&1 &
policyd_pid=$!
for _ in $(seq 1 150); do   # up to 15 s
  grep -q "ready: generation" "$work/policyd.log" && break
  kill -0 "$policyd_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q "ready: generation" "$work/policyd.log" || { cat "$work/policyd.log" >&2; die "policyd did not become ready"; }
st=$(timeout 10 /usr/sbin/policyctl --socket "$work/policyd.sock" status) || die "policyctl status failed"
grep -q '^interfaces: *gw-c' <<<"$st" || { echo "$st" >&2; die "policyctl status does not show gw-c attached"; }
ok "policyd ready; policyctl status: attached to gw-c"

sync_seq=0
# Makes nginx's access log complete up to now: a request from the gateway itself (not through
# the hook on gw-c), logged after everything before it.
sync_log() {
  sync_seq=$((sync_seq + 1))
  ip netns exec "$name-g" curl -s --max-time 5 -o /dev/null "http://192.0.2.2/__sync/$sync_seq" || true
  for _ in $(seq 1 50); do   # up to 5 s
    grep -qF "GET /__sync/$sync_seq " "$work/nginx/access.log" 2>/dev/null && return 0
    sleep 0.1
  done
  die "nginx did not log the sync request /__sync/$sync_seq"
}
# request PATH: prints "HTTP_CODE BODY" of GET http://app.example.com/PATH from the client
request() {
  local out
  out=$(ip netns exec "$name-c" curl -sS --max-time 5 --connect-to ::192.0.2.2: -w ' %{http_code}' \
          "http://app.example.com$1" 2>/dev/null) || true
  echo "${out##* } ${out% *}"
}
got=$(request /allowed)
[ "$got" = "200 ok GET app.example.com /allowed" ] || die "GET /allowed: '$got', expected 200 from nginx"
got=$(request /denied)
[ "${got%% *}" = 403 ] || die "GET /denied: '$got', expected 403 from the gateway"
sync_log
grep -qF "GET /allowed " "$work/nginx/access.log" || die "nginx did not log /allowed"
! grep -qF "GET /denied " "$work/nginx/access.log" || die "the denied request reached nginx"
ok "GET /allowed -> 200 from nginx; GET /denied -> 403 from the gateway, never reached nginx"

kill -TERM "$policyd_pid"
for _ in $(seq 1 100); do kill -0 "$policyd_pid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$policyd_pid" 2>/dev/null || die "policyd did not stop within 10 s of SIGTERM"
wait "$policyd_pid" || die "policyd exited with status $? on SIGTERM"
policyd_pid=""
[ -n "$(pins "$work/bpf")" ] || die "policyd stopped and its chain is not pinned (it should stay)"
got=$(request /denied)
[ "${got%% *}" = 403 ] || die "with policyd stopped, GET /denied: '$got': the pinned chain should still deny it"
timeout 15 ip netns exec "$name-g" /usr/sbin/policyd --detach --pin-dir "$work/bpf" || die "policyd --detach failed"
[ -z "$(pins "$work/bpf")" ] || die "policyd --detach left pins: $(pins "$work/bpf" | tr '\n' ' ')"
[ -z "$(ip netns exec "$name-g" tc filter show dev gw-c ingress)" ] || die "policyd --detach left a filter on gw-c"
got=$(request /denied)
[ "$got" = "200 ok GET app.example.com /denied" ] || die "after detach, GET /denied: '$got', expected 200 from nginx"
ok "stopped: the chain stays and denies; policyd --detach: no pins, no filter, traffic passes"

# ------------------------------------------------------------------------------------------
say "4. The starter policy as the service runs it; purge"
timeout 180 unshare --mount --propagation private "$self" --starter-phase "$work"
installed=0

# ------------------------------------------------------------------------------------------
say "5. Nothing left"
status=$(dpkg-query -W -f='${db:Status-Abbrev}' policyd 2>/dev/null || true)
[ -z "$status" ] || [ "${status:1:1}" = n ] || die "dpkg still knows policyd after the purge: '$status'"
for p in "${PACKAGE_PATHS[@]}"; do
  if [ -e "$p" ] || [ -L "$p" ]; then die "$p is left after the purge"; fi
done
ok "no file of the package, no unit state, no /etc/policyd, no /run/policyd"
getent group policyd >/dev/null || die "the purge removed the group policyd (Debian keeps system groups)"
ok "the group policyd stays (as Debian keeps system groups); this test removes it if it made it"
exit 0
