# Shared by the componentizing plugin builds (Python, JavaScript): a cache
# of built components keyed by a hash of their inputs, one build at a time,
# and installation into the output directory. Source it after setting ROOT;
# it is not run on its own.

# plugin_cache_init LANG: CACHE=${WSGATE_TOOL_CACHE:-~/.cache/wsgate}/LANG, created
# and locked (test binaries may start builds concurrently).
plugin_cache_init() {
  CACHE=${WSGATE_TOOL_CACHE:-$HOME/.cache/wsgate}/$1
  mkdir -p "$CACHE/wasm"
  exec 9>"$CACHE/.lock"
  flock 9
}

# inputs_hash PATH...: hash of the listed files' and directories' contents
# (with their paths relative to ROOT), ignoring what does not go into a
# plugin: tool caches, tests, and a project's own build output (dist/).
inputs_hash() {
  find "$@" -type d \( -name node_modules -o -name __pycache__ -o -name .pytest_cache -o -name dist \) -prune \
    -o -type f ! -name 'test_*.py' ! -name 'conftest.py' ! -name '*.test.mjs' -print0 | sort -z \
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
  # The sidecar first: a watching server loads the plugin when its .wasm
  # lands, with whatever sidecar is beside it then.
  if [ -f "$plugin/$name.toml" ]; then cp "$plugin/$name.toml" "$out/$name.toml"; fi
  cp "$cached" "$out/.$name.wasm.tmp" && mv "$out/.$name.wasm.tmp" "$out/$name.wasm"
}
