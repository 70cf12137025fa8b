# shellcheck shell=bash
# Sourced by scripts/setup.sh: the `mlx` step (Linux x86_64 only; macOS builds mlx-sys as usual).
#
# Everything lands under $PROMPTLOOP_CACHE/mlx (default ~/.cache/promptloop/mlx):
#   wheel/       the mlx-cpu wheel, unpacked: libmlx.so, headers, MLXConfig.cmake
#   build/       mlx-c's cmake build (static libmlxc.a, PIC)
#   lib/         libpromptloop_mlx.so = mlxc + compat.c, linked to libmlx.so; its SONAME is its
#                absolute path, so binaries find it (and it finds libmlx via RUNPATH) without
#                rpath flags or LD_LIBRARY_PATH
#   bindings/    bindings.rs for mlx-sys (its lib.rs include!s $OUT_DIR/bindings.rs)
#   tools/       bindgen-cli 0.72.1 (cargo install)
#   cargo-config.toml  the override; builds pass it as `cargo --config <this file>` (a repo's
#                config cannot expand $HOME, `include` is unstable, and the user's own
#                $CARGO_HOME/config.toml is left alone)
# Each part is skipped when present; delete $PROMPTLOOP_CACHE/mlx to rebuild from zero.

MLX_VERSION="0.32.2"
MLX_WHEEL_SHA="fc5d31b90fc4f457b2f9614ed45651a567d22a6a11a03d114a90a4e10bdd8878"  # manylinux_2_35_x86_64
MLX_SYS_VERSION="0.7.0"
BINDGEN_VERSION="0.72.1"

mlx_setup() {
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) ;;
        Darwin-*) log "mlx: macOS builds mlx-sys itself (Metal); nothing to set up"; return ;;
        *) die "mlx: only Linux x86_64 (mlx-cpu wheel) and macOS are supported" ;;
    esac
    local dir="$CACHE/mlx"
    mkdir -p "$dir"
    mlx_blas
    mlx_wheel "$dir"
    mlx_c_build "$dir"
    mlx_bindings "$dir"
    mlx_cargo_override "$dir"
}

# OpenBLAS: the wheel's libmlx needs the auditwheel-renamed reference BLAS/LAPACK next to it
# (2-5 GFLOP/s sgemm); OpenBLAS's libblas.so.3/liblapack.so.3 export the same BLAS, CBLAS and
# LAPACK symbols (37-46 GFLOP/s on this machine), so mlx_wheel points those names at them.
mlx_blas() {
    if [ -f /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ]; then
        log "mlx: OpenBLAS present"
        return
    fi
    command -v apt-get >/dev/null || { log "mlx: no apt-get; keeping the wheel's reference BLAS (slow)"; return; }
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "mlx: installing libopenblas0-pthread"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libopenblas0-pthread >/dev/null
}

mlx_wheel() {
    local dir="$1" wheel="$1/wheel"
    if [ ! -f "$wheel/mlx/lib/libmlx.so" ]; then
        local tmp; tmp="$(mktemp -d)"; SCRATCH+=("$tmp")
        log "mlx: pip download mlx-cpu==$MLX_VERSION"
        fetch_wheel "mlx-cpu==$MLX_VERSION" "$tmp"
        local got; got="$(sha256_of "$tmp"/mlx_cpu-*.whl)"
        [ "$got" = "$MLX_WHEEL_SHA" ] || die "mlx-cpu wheel: sha256 $got, expected $MLX_WHEEL_SHA"
        rm -rf "$wheel.partial"
        python3 -m zipfile -e "$tmp"/mlx_cpu-*.whl "$wheel.partial"
        rm -rf "$wheel" && mv "$wheel.partial" "$wheel"
    fi
    local libs="$wheel/mlx_cpu.libs" openblas=/usr/lib/x86_64-linux-gnu/openblas-pthread name
    if [ -f "$openblas/libblas.so.3" ]; then
        for name in "$libs"/libblas-*.so.* "$libs"/liblapack-*.so.*; do
            [ -L "$name" ] && continue
            mv "$name" "$name.reference"
            case "$(basename "$name")" in
                libblas-*) ln -s "$openblas/libblas.so.3" "$name" ;;
                liblapack-*) ln -s "$openblas/liblapack.so.3" "$name" ;;
            esac
        done
        log "mlx: wheel at $wheel, BLAS/LAPACK -> OpenBLAS"
    else
        log "mlx: wheel at $wheel, reference BLAS"
    fi
}

mlx_sys_dir() {
    (cd "$ROOT" && cargo metadata --format-version 1 --features engines/mlx) | python3 -c '
import json, sys
want = sys.argv[1]
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "mlx-sys" and p["version"] == want:
        print(p["manifest_path"].rsplit("/", 1)[0]); break
else:
    sys.exit(f"mlx-sys {want} is not in the dependency graph")' "$MLX_SYS_VERSION"
}

mlx_c_build() {
    local dir="$1" lib="$1/lib/libpromptloop_mlx.so"
    if [ -f "$lib" ]; then log "mlx: $lib present"; return; fi
    local src; src="$(mlx_sys_dir)/src/mlx-c"
    [ -f "$src/CMakeLists.txt" ] || die "mlx: mlx-c sources not found at $src"
    log "mlx: building mlx-c from $src against the wheel (~2 min on 2 cores)"
    cmake -S "$src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release \
        -DMLX_C_USE_SYSTEM_MLX=ON -DMLX_DIR="$dir/wheel/mlx/share/cmake/MLX" \
        -DMLX_C_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF \
        -DCMAKE_CXX_FLAGS="-include $ROOT/scripts/mlx/compat.hpp" >"$dir/cmake.log" 2>&1 \
        || die "mlx: cmake configure failed, see $dir/cmake.log"
    nice -n 19 cmake --build "$dir/build" -j2 >>"$dir/cmake.log" 2>&1 \
        || die "mlx: mlx-c build failed, see $dir/cmake.log"
    mkdir -p "$dir/lib"
    gcc -O2 -fPIC -c "$ROOT/scripts/mlx/compat.c" -o "$dir/build/compat.o"
    g++ -shared -o "$lib.partial" -Wl,-soname,"$lib" \
        -Wl,--whole-archive "$dir/build/libmlxc.a" -Wl,--no-whole-archive "$dir/build/compat.o" \
        -L"$dir/wheel/mlx/lib" -lmlx -Wl,-rpath,"$dir/wheel/mlx/lib" \
        || die "mlx: linking $lib failed"
    mv "$lib.partial" "$lib"
    log "mlx: $lib built"
}

mlx_bindings() {
    local dir="$1" out="$1/bindings/bindings.rs"
    if [ -f "$out" ]; then log "mlx: $out present"; return; fi
    local bindgen="$dir/tools/bin/bindgen"
    if [ -z "${LIBCLANG_PATH:-}" ]; then
        # the newest LLVM whose libclang is installed (libclang-dev, from `scripts/setup.sh`)
        local found
        found="$(ls -d /usr/lib/llvm-*/lib/libclang.so* 2>/dev/null | sort -V | tail -n 1)"
        [ -n "$found" ] || die "mlx: no libclang under /usr/lib/llvm-*/lib (apt install libclang-dev)"
        export LIBCLANG_PATH="${found%/*}"
    fi
    if [ ! -x "$bindgen" ]; then
        log "mlx: cargo install bindgen-cli $BINDGEN_VERSION (~2 min on 2 cores)"
        CARGO_TARGET_DIR="$dir/tools-target" nice -n 19 cargo install --quiet --locked \
            bindgen-cli --version "$BINDGEN_VERSION" --root "$dir/tools" \
            || die "mlx: cargo install bindgen-cli failed"
        rm -rf "$dir/tools-target"
    fi
    local src; src="$(mlx_sys_dir)/src/mlx-c"
    local umbrella="$dir/bindings/mlx-c.h"
    mkdir -p "$dir/bindings"
    # mlx-sys binds every header of mlx/c; one umbrella header gives the same item set.
    : > "$umbrella"
    local header
    for header in "$src"/mlx/c/*.h; do printf '#include "%s"\n' "$header" >> "$umbrella"; done
    "$bindgen" "$umbrella" --rust-target 1.73.0 --blocklist-function malloc \
        --blocklist-function realloc -o "$out.partial" -- -I"$src" \
        -include "$ROOT/scripts/mlx/bindgen.h" || die "mlx: bindgen failed"
    mv "$out.partial" "$out"
    log "mlx: bindings at $out"
}

mlx_cargo_override() {
    local dir="$1" conf="$1/cargo-config.toml"
    cat > "$conf" <<TOML
# promptloop MLX (written by scripts/setup.sh mlx): replaces mlx-sys's build script on Linux
# x86_64 with the wheel-based build under $dir.
[target.x86_64-unknown-linux-gnu.mlx]
rustc-link-search = ["native=$dir/lib"]
rustc-link-lib = ["dylib=promptloop_mlx"]
rustc-env = { OUT_DIR = "$dir/bindings" }
TOML
    log "mlx: links override in $conf (pass it to cargo: --config $conf)"
}
