# Sourced by scripts that install Debian packages they need.
# apt_install PKG...: installs without recommends, as root or via sudo -n.
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi

apt_install() {
  # One install at a time, so set-up scripts may run side by side (apt
  # refuses a second installer); and wait for any other apt that is running.
  (
    flock 8
    # Try the current package lists first; refresh them only if that fails.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
      -o DPkg::Lock::Timeout=300 "$@" </dev/null \
      || { $SUDO apt-get update </dev/null \
        && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
          -o DPkg::Lock::Timeout=300 "$@" </dev/null; }
  ) 8>"${TMPDIR:-/tmp}/wsgate-apt.lock"
}
