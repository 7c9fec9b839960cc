#!/usr/bin/env bash
# Put the real Pulumi toolchain on PATH: the `pulumi` CLI, the Python language
# host, the plugin that runs `pulumi.dynamic` resources, and (where they can be
# had) the `command` and `docker` resource plugins.
#
#   bash tools/pulumi-toolchain.sh            # find or build, print the bin dir last
#   eval "$(bash tools/pulumi-toolchain.sh --env)"   # same, then export PATH etc.
#
# A binary already on PATH whose version matches is used as it is (a user who
# installed Pulumi the usual way builds nothing). Otherwise it is built from
# the Go module proxy into a cache outside the clone
# ($ASCEND_INFERENCE_CACHE, default ~/.cache/ascend-inference), so a second run
# takes seconds. Every version is pinned here and nowhere else; requirements.txt
# pins the Python SDK packages that go with them.
#
# `go install module@version` refuses modules whose go.mod has `replace`
# directives (pulumi's pkg/v3 has them), so each binary is built from a small
# throwaway module that requires it and repeats its non-local replaces.
set -euo pipefail

# --- the one place the toolchain versions live --------------------------------
# CLI: the newest pkg/v3 the module proxy serves at or after the Python SDK in
# requirements.txt (3.272.0 itself is not served; a newer CLI runs older SDKs).
PULUMI_CLI_VERSION=v3.274.1
# Language host: from v3.81 on it is its own Go module, which the module proxy
# here does not serve; v3.68.0 is the newest sdk/v3 the proxy serves that still
# carries it (with its exec shim). It drives the SDK in requirements.txt.
PULUMI_PYTHON_HOST_VERSION=v3.68.0
# Resource plugins, matching pulumi-command / pulumi-docker in requirements.txt.
PULUMI_COMMAND_VERSION=1.2.1
PULUMI_DOCKER_VERSION=4.11.2
# ------------------------------------------------------------------------------

cache=${ASCEND_INFERENCE_CACHE:-$HOME/.cache/ascend-inference}
bin="$cache/pulumi-$PULUMI_CLI_VERSION/bin"
want_env=false
[ "${1:-}" = "--env" ] && want_env=true

say() { echo "pulumi-toolchain: $*" >&2; }
mkdir -p "$bin" "$cache/build"

have_version() { # binary, expected version (without v) -> 0 when it prints it
  local path=$1 want=${2#v}
  [ -x "$path" ] || return 1
  case "$("$path" version 2>/dev/null || "$path" -version 2>/dev/null || true)" in
    *"$want"*) return 0 ;;
  esac
  return 1
}

on_path_with_version() { # name, version -> prints the path when it matches
  local found
  found=$(command -v "$1" 2>/dev/null) || return 1
  case "$found" in "$bin"/*) return 1 ;; esac
  have_version "$found" "$2" && echo "$found"
}

go_build() { # label, dir, module line..., then -- package out ldflags
  local label=$1 dir=$2; shift 2
  local start=$SECONDS
  mkdir -p "$dir"
  say "building $label (cold: many minutes on 2 cores; cached after)"
  (
    cd "$dir"
    export GOFLAGS=-mod=mod GOTOOLCHAIN=local
    "$@"
  ) >"$dir/build.log" 2>&1 || {
    say "building $label failed; the last lines of $dir/build.log:"
    tail -n 15 "$dir/build.log" >&2
    return 1
  }
  say "built $label in $((SECONDS - start)) s"
}

# 1. the CLI ------------------------------------------------------------------
if found=$(on_path_with_version pulumi "$PULUMI_CLI_VERSION"); then
  ln -sf "$found" "$bin/pulumi"
  say "using $found"
elif have_version "$bin/pulumi" "$PULUMI_CLI_VERSION"; then
  say "cached pulumi $PULUMI_CLI_VERSION"
else
  dir="$cache/build/pulumi-cli-$PULUMI_CLI_VERSION"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<EOF
module pulumi-cli-build

go 1.26

require (
	github.com/pulumi/pulumi/pkg/v3 $PULUMI_CLI_VERSION
	github.com/pulumi/pulumi/sdk/v3 $PULUMI_CLI_VERSION
)

// pkg/v3's own non-local replace (its sdk/v3 replace is local: the require above stands for it)
replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
EOF
  go_build "pulumi $PULUMI_CLI_VERSION" "$dir" sh -c "
    go get github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@$PULUMI_CLI_VERSION &&
    go build -trimpath -o '$bin/pulumi' \
      -ldflags '-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_CLI_VERSION' \
      github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
fi

# 2. the Python language host -------------------------------------------------
host_ok() { [ -x "$bin/pulumi-language-python" ] && [ -x "$bin/pulumi-language-python-exec" ] \
  && [ -f "$bin/.python-host-$PULUMI_PYTHON_HOST_VERSION" ]; }
if host_ok; then
  say "cached pulumi-language-python $PULUMI_PYTHON_HOST_VERSION"
else
  dir="$cache/build/pulumi-language-python-$PULUMI_PYTHON_HOST_VERSION"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<EOF
module pulumi-language-python-build

go 1.18

require github.com/pulumi/pulumi/sdk/v3 $PULUMI_PYTHON_HOST_VERSION

// sdk/v3's own non-local replace at that version
replace golang.org/x/text => golang.org/x/text v0.3.6
EOF
  go_build "pulumi-language-python $PULUMI_PYTHON_HOST_VERSION" "$dir" sh -c "
    go get github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python@$PULUMI_PYTHON_HOST_VERSION &&
    go build -trimpath -o '$bin/pulumi-language-python' \
      -ldflags '-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_PYTHON_HOST_VERSION' \
      github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python &&
    install -m 755 \"\$(go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)/python/cmd/pulumi-language-python-exec\" '$bin/'"
  touch "$bin/.python-host-$PULUMI_PYTHON_HOST_VERSION"
fi

# 3. the dynamic-provider plugin ------------------------------------------------
# `pulumi.dynamic` resources (the program's GPUStack model) run in the
# `pulumi-resource-pulumi-python` plugin: a shell script of the pulumi repo
# (sdk/python/dist) that starts `python -m pulumi.dynamic` in the project's
# virtualenv. It comes with the CLI's own sdk/v3 module, already downloaded
# for the CLI build.
dynamic_ok() { [ -x "$bin/pulumi-resource-pulumi-python" ] && [ -f "$bin/.dynamic-$PULUMI_CLI_VERSION" ]; }
if dynamic_ok; then
  say "cached pulumi-resource-pulumi-python $PULUMI_CLI_VERSION"
else
  sdk_dir=$(cd "$cache/build" && GOFLAGS=-mod=mod go mod download -json "github.com/pulumi/pulumi/sdk/v3@$PULUMI_CLI_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' | head -n 1) || sdk_dir=""
  if [ -n "$sdk_dir" ] && [ -f "$sdk_dir/python/dist/pulumi-resource-pulumi-python" ]; then
    install -m 755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$bin/"
    touch "$bin/.dynamic-$PULUMI_CLI_VERSION"
    say "installed pulumi-resource-pulumi-python from $sdk_dir/python/dist"
  else
    say "pulumi-resource-pulumi-python: not found in github.com/pulumi/pulumi/sdk/v3@$PULUMI_CLI_VERSION (python/dist)"
    exit 1
  fi
fi

# 4. the resource plugins -----------------------------------------------------
# The CLI finds a plugin on PATH (pulumi-resource-<name>) or in
# $PULUMI_HOME/plugins (where `pulumi plugin install` puts it). Without one it
# tries Pulumi's download site at the first preview, which fails offline.
missing=()
plugin_ok() { # name version
  local name=$1 version=$2
  if command -v "pulumi-resource-$name" >/dev/null 2>&1; then return 0; fi
  "$bin/pulumi" plugin ls 2>/dev/null | awk -v n="$name" -v v="$version" '$1==n && $3==v {found=1} END {exit !found}'
}
for pair in "command:$PULUMI_COMMAND_VERSION:github.com/pulumi/pulumi-command/provider@v$PULUMI_COMMAND_VERSION" \
            "docker:$PULUMI_DOCKER_VERSION:github.com/pulumi/pulumi-docker/provider/v4@v$PULUMI_DOCKER_VERSION"; do
  IFS=: read -r name version module <<<"$pair"
  if plugin_ok "$name" "$version"; then
    say "plugin $name $version found"
    continue
  fi
  # Try the module proxy; on the machines this project is developed on it
  # refuses both provider modules (HTTP 403), so report exactly that. Bounded:
  # after a refusal go may fall back to git, which on a network that drops
  # packets instead of refusing them would wait for as long as TCP does.
  why=$(cd "$cache/build" && GIT_TERMINAL_PROMPT=0 GOFLAGS=-mod=mod timeout 120 go mod download -json "$module" 2>&1 |
    sed -n 's/.*"Error": "\(.*\)".*/\1/p' | head -n 1 || true)
  say "plugin $name $version: not on PATH or in \$PULUMI_HOME/plugins, and cannot be built here: ${why:-go gave no reason within 120 s}"
  missing+=("$name")
done
printf '%s\n' "${missing[@]}" >"$bin/.missing-plugins"

if $want_env; then
  echo "export PATH=\"$bin:\$PATH\" PULUMI_SKIP_UPDATE_CHECK=1"
else
  echo "$bin"
fi
