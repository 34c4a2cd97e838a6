# Shared by the componentizing plugin builds (Python, JavaScript): a cache
# of built components keyed by a hash of their inputs, one build at a time,
# and installation into the output directory. Source it after setting ROOT;
# it is not run on its own.

# plugin_cache_init LANG: CACHE=${WSGATE_CACHE:-~/.cache/wsgate}/LANG, created
# and locked (test binaries may start builds concurrently).
plugin_cache_init() {
  CACHE=${WSGATE_CACHE:-$HOME/.cache/wsgate}/$1
  mkdir -p "$CACHE/wasm"
  exec 9>"$CACHE/.lock"
  flock 9
}

# inputs_hash PATH...: hash of the listed files' and directories' contents
# (with their paths relative to ROOT), ignoring tool caches.
inputs_hash() {
  find "$@" -type f ! -path '*/node_modules/*' ! -path '*/__pycache__/*' -print0 | sort -z \
    | xargs -0 sha256sum | sed "s|$ROOT/||" | sha256sum | cut -c1-32
}

# install_plugin CACHED NAME PLUGIN_DIR OUT: marks CACHED as just used, keeps
# the three most recently used builds of NAME, and copies it to OUT/NAME.wasm
# (copy then rename, so a watching server never sees a half-written file)
# with the sidecar PLUGIN_DIR/NAME.toml if there is one.
install_plugin() {
  local cached=$1 name=$2 plugin=$3 out=$4
  touch "$cached"
  ls -t "$CACHE/wasm/$name-"*.wasm | tail -n +4 | xargs -r rm -f
  cp "$cached" "$out/.$name.wasm.tmp" && mv "$out/.$name.wasm.tmp" "$out/$name.wasm"
  if [ -f "$plugin/$name.toml" ]; then cp "$plugin/$name.toml" "$out/$name.toml"; fi
}
