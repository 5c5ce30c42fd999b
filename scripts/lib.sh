# Shared by scripts/test and scripts/demo: find Python >= 3.10, make .venv, get redis-server (and
# Chromium for the UI's browser tests).

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3.10 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "envflow needs Python 3.10 or newer; none found (set PYTHON=/path/to/python3)" >&2
  return 1
}

# ensure_venv [extra]: .venv with envflow installed (editable), plus the named extra.
ensure_venv() {
  local python extras="${1:-}" extra
  # What is installed, and from where: a rerun with the same pyproject.toml and extras it has skips pip.
  local stamp=".venv/.envflow-installed" want installed=""
  want="$(pwd) $(cksum < pyproject.toml)"
  if [ -x .venv/bin/envflow ] && [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$want" ]; then
    installed=$(sed -n 2p "$stamp")
    local missing=""
    for extra in ${extras//,/ }; do
      case ",$installed," in *",$extra,"*) ;; *) missing=1 ;; esac
    done
    [ -z "$missing" ] && return 0
  fi
  [ -n "$installed" ] && extras="${installed},${extras}"  # keep what was installed, add what is asked
  if [ ! -x .venv/bin/python ]; then
    python=$(find_python)
    echo "making .venv with $python ..." >&2
    "$python" -m venv .venv
  fi
  echo "installing envflow${extras:+[$extras]} into .venv (pip; the first time takes about 20 s) ..." >&2
  local log=.venv/install.log
  if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=23" &&
         .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing envflow into .venv failed (log above, also in $log)" >&2
    return 1
  fi
  printf '%s\n%s\n' "$want" "$extras" > "$stamp"
}

ensure_redis_server() {
  command -v redis-server >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server from Debian's archive..." >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    command -v redis-server >/dev/null 2>&1 && return 0
  fi
  echo "redis-server is missing: install it (sudo apt-get install redis-server / brew install redis) and rerun" >&2
  return 1
}

# Debian's chromium and chromium-driver, for the UI's browser tests (tests/ui/test_browser.py).
# Installed when root; otherwise those tests skip and say why.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver from Debian's archive (browser tests)..." >&2
    apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return 0
  fi
  echo "chromium/chromedriver not installed: the UI's browser tests will skip (as root, apt-get install chromium chromium-driver)" >&2
}

# installed_tree DIR: a copy of the package laid out as installed (worker/ and scheduler/ are
# envflow.worker and envflow.scheduler through package-dir), for tools that read packages from disk.
installed_tree() {
  cp -r envflow "$1/envflow"
  cp -r worker "$1/envflow/worker"
  cp -r scheduler "$1/envflow/scheduler"
  find "$1" -name __pycache__ -prune -exec rm -rf {} +
}
