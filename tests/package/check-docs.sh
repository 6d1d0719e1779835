#!/usr/bin/env bash
# The man pages and the shell completion of the package against what the binaries accept
# (cmake/Packaging.cmake builds them into BUILD_DIR/packaging):
#   - policyd(8) documents every option `policyd --help` lists, and no option it lacks;
#   - policyctl(8) documents every command and option of `policyctl --help` and of each
#     command's --help, and no command or option they lack;
#   - each page renders without a warning (as lintian checks it);
#   - the bash completion script is what `policyctl completion bash` prints, and completes
#     commands, options, option values and policy files as it should, run in bash;
#   - the zsh script parses (when zsh is installed).
# Usage: check-docs.sh BUILD_DIR   (CTest: package_docs; no root needed)
set -euo pipefail

die() { echo "check-docs: FAIL: $*" >&2; exit 1; }
ok() { printf '   ok: %s\n' "$*"; }

[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
build=$(cd "$1" && pwd)
policyd=$build/daemon/policyd
policyctl=$build/daemon/policyctl
out=$build/packaging
for f in "$policyd" "$policyctl" "$out/man/policyd.8.gz" "$out/man/policyctl.8.gz" "$out/man/policyd.yaml.5.gz" \
         "$out/policyctl.bash" "$out/policyctl.zsh"; do
  [ -e "$f" ] || die "$f is missing (build the targets policyd, policyctl and policyd_package_files)"
done
command -v man >/dev/null || die "man is not installed"

# The options a CLI11 --help lists (-h --help --config ...), one a line.
options_of() {
  "$@" --help | awk '/^Options:/ {o = 1; next} /^[A-Za-z]+:/ {o = 0} o && /^  -/ {print $1}' | tr ',' '\n'
}
# The commands `policyctl --help` lists.
commands_of() {
  "$@" --help | awk '/^Subcommands:/ {s = 1; next} /^[A-Za-z]+:/ {s = 0} s && /^  [a-z]/ {print $1}'
}
# The terms of the definitions (.TP) in section $2 of man page $1, as plain text, one a line.
terms() {
  zcat "$1" | awk -v s="$2" '/^\.SH/ {in_s = ($2 == s); next} in_s && /^\.TP/ {getline; print}' |
    sed -e 's/\\f\[[A-Z]*\]//g' -e 's/\\-/-/g' -e 's/\\\[rs\]/\\/g'
}
# Words starting with '-' in the text on stdin, without what follows = or ',' or ']'.
option_words() { grep -oE '(^|[ [|])--?[a-zA-Z][-a-zA-Z]*' | sed 's/^[ [|]//'; }
# in WORD LIST...: whether WORD is one of LIST (no pipe: grep -q would end it early, and
# pipefail would call that a failure)
in_list() {
  local w=$1 e
  shift
  for e in "$@"; do [ "$e" = "$w" ] && return 0; done
  return 1
}
has_word() { grep -qE -- "(^|[^-a-zA-Z])$2([^-a-zA-Z]|$)" <<<"$1"; }

for page in "$out"/man/*.gz; do
  warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
  [ -z "$warnings" ] || die "$(basename "$page"): $warnings"
done
ok "the man pages render without warnings"

# --- policyd(8)
page=$out/man/policyd.8.gz
mapfile -t accepted < <(options_of "$policyd")
[ ${#accepted[@]} -gt 3 ] || die "policyd --help lists no options"
for o in "${accepted[@]}"; do
  has_word "$(terms "$page" OPTIONS)" "$o" || die "policyd(8) does not document $o (OPTIONS)"
done
while read -r o; do
  in_list "$o" "${accepted[@]}" || die "policyd(8) documents $o, which policyd --help does not list"
done < <(terms "$page" OPTIONS | option_words)
ok "policyd(8) documents exactly the options of policyd --help: ${accepted[*]}"

# --- policyctl(8)
page=$out/man/policyctl.8.gz
mapfile -t global < <(options_of "$policyctl")
mapfile -t commands < <(commands_of "$policyctl")
[ ${#commands[@]} -gt 3 ] || die "policyctl --help lists no commands"
for o in "${global[@]}"; do
  has_word "$(terms "$page" OPTIONS)" "$o" || die "policyctl(8) does not document the option $o (OPTIONS)"
done
while read -r o; do
  in_list "$o" "${global[@]}" || die "policyctl(8) documents $o, which policyctl --help does not list"
done < <(terms "$page" OPTIONS | option_words)
for c in "${commands[@]}"; do
  term=$(terms "$page" COMMANDS | awk -v c="$c" '$1 == c') || true
  [ -n "$term" ] || die "policyctl(8) does not document the command $c (COMMANDS)"
  mapfile -t own < <(options_of "$policyctl" "$c" | grep -vx -e -h -e --help)
  for o in "${own[@]}"; do
    has_word "$term" "$o" || die "policyctl(8) does not document $o of $c (COMMANDS: '$term')"
  done
  while read -r o; do
    in_list "$o" "${own[@]}" || die "policyctl(8) documents $o for $c, which policyctl $c --help does not list"
  done < <(option_words <<<"$term")
done
while read -r c _; do
  in_list "$c" "${commands[@]}" || die "policyctl(8) documents the command $c, which policyctl --help does not list"
done < <(terms "$page" COMMANDS)
ok "policyctl(8) documents exactly the commands and options of policyctl: ${commands[*]}"

# --- bash completion
diff -u <("$policyctl" completion bash) "$out/policyctl.bash" >/dev/null ||
  die "$out/policyctl.bash is not what policyctl completion bash prints (stale? rebuild policyd_package_files)"
files=$(mktemp -d /tmp/policyd-check-docs.XXXXXX)
trap 'rm -rf "$files"' EXIT
mkdir "$files/sub"
touch "$files/a.yaml" "$files/b.yml" "$files/c.txt"
# complete WORD...: what bash completes the last word to (sorted, on one line), in $files
complete() {
  (cd "$files" && bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _policyctl
                           printf "%s\n" "${COMPREPLY[@]}"' _ "$out/policyctl.bash" "$@") | sort | xargs
}
sorted() { printf '%s\n' "$@" | sort | xargs; }
expect() {
  local want=$1
  shift
  local got
  got=$(complete "$@")
  [ "$got" = "$want" ] || die "bash completes '$*' to '$got', expected '$want'"
}
expect "$(sorted "${commands[@]}")" policyctl ''
expect "$(sorted "${global[@]}")" policyctl -
expect "validate" policyctl val
expect "json text" policyctl -o ''
expect "json" policyctl --output = j
expect "a.yaml b.yml sub" policyctl validate ''
expect "a.yaml b.yml sub" policyctl --socket /run/x.sock -o json apply --dry-run ''
expect "c.txt" policyctl diff c
expect "bash zsh" policyctl completion ''
expect "a.yaml b.yml c.txt sub" policyctl --socket ''
for c in "${commands[@]}"; do
  mapfile -t own < <(options_of "$policyctl" "$c")
  expect "$(sorted "${own[@]}" "${global[@]}" | tr ' ' '\n' | sort -u | xargs)" policyctl --socket /x "$c" -
done
ok "bash completion: the binary's script; commands, options of each command, -o values, policy files"

# --- zsh completion
if command -v zsh >/dev/null; then
  zsh -n "$out/policyctl.zsh" || die "the zsh completion script does not parse"
  ok "zsh completion parses"
else
  echo "   note: zsh is not installed: the zsh completion script was not checked"
fi
exit 0
