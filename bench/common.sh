# Shared by the bench scripts (sourced after scripts/services.sh; the caller
# defines `say`).

# GNU time (`/usr/bin/time -f`) measures each command's peak RSS.
ensure_gnu_time() {
  [ -x /usr/bin/time ] && return 0
  say "installing GNU time"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null; }
}
