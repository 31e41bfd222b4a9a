# Helpers shared by the test_cli_*.sh scripts, sourced once $T (the test's
# temporary directory) is set. Every command's stdout goes to $T/out and its
# stderr to $T/err.

# show_out: what fail prints of stdout (a script may redefine it).
show_out() { cat "$T/out"; }

# fail MSG...: say why, show the last command's output, exit 1.
fail() {
  echo "FAIL: $*" >&2
  echo "--- stdout" >&2
  show_out >&2 || true
  echo "--- stderr" >&2
  cat "$T/err" >&2 || true
  exit 1
}

# expect CODE CMD...: run CMD, check its exit code.
expect() {
  local want=$1 rc=0
  shift
  "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" = "$want" ] || fail "exit $rc, wanted $want: $*"
}

has_out() { grep -qF -- "$1" "$T/out" || fail "stdout lacks '$1'"; }
has_err() { grep -qF -- "$1" "$T/err" || fail "stderr lacks '$1'"; }
