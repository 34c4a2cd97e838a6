# Sourced by scripts that install Debian packages they need.
# apt_install PKG...: installs without recommends, as root or via sudo -n.
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi

apt_install() {
  # Try the current package lists first; refresh them only if that fails.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@" </dev/null \
    || { $SUDO apt-get update </dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@" </dev/null; }
}
