#!/usr/bin/env bash
# `make test-install`: installs the C library with `make install` into a temporary PREFIX, then
# builds examples/c/cache_demo.c OUTSIDE the checkout against that installed copy, using only
# `pkg-config` (PKG_CONFIG_PATH into the prefix), and runs it:
#   1. shared: `pkg-config --cflags --libs keel`, run with LD_LIBRARY_PATH; the program must
#      record the SONAME libkeel.so.<ABI> (not libkeel.so), which the installed links resolve;
#   2. static: `pkg-config --static --cflags --libs keel` with -static, so libkeel.a and the
#      system libraries it needs (Libs.private) are linked in; the program needs no libkeel.so.
# Also checks the installed layout (header, libkeel.a, libkeel.so.<version> + links, keel.pc).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
CC="${CC:-cc}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PREFIX="$WORK/prefix"

fail() { echo "test-install FAILED: $*" >&2; exit 1; }

make -C "$ROOT" --no-print-directory install PREFIX="$PREFIX"

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)"
ABI="${VERSION%%.*}"
LIB="$PREFIX/lib"
for f in include/keel.h lib/libkeel.a "lib/libkeel.so.$VERSION" lib/pkgconfig/keel.pc; do
    [[ -f "$PREFIX/$f" && ! -L "$PREFIX/$f" ]] || fail "$f is not installed as a file"
done
[[ "$(readlink "$LIB/libkeel.so.$ABI")" == "libkeel.so.$VERSION" ]] || fail "libkeel.so.$ABI link"
[[ "$(readlink "$LIB/libkeel.so")" == "libkeel.so.$ABI" ]] || fail "libkeel.so link"
soname="$(readelf -d "$LIB/libkeel.so.$VERSION" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
[[ "$soname" == "libkeel.so.$ABI" ]] || fail "SONAME is '$soname', expected libkeel.so.$ABI"
cmp -s "$ROOT/include/keel.h" "$PREFIX/include/keel.h" || fail "installed keel.h differs"

export PKG_CONFIG_PATH="$LIB/pkgconfig"
unset PKG_CONFIG_LIBDIR
[[ "$(pkg-config --modversion keel)" == "$VERSION" ]] || fail "pkg-config --modversion keel"

# Outside the checkout: nothing but the prefix can provide keel.h or libkeel.
cp "$ROOT/examples/c/cache_demo.c" "$WORK/"
cd "$WORK"
CFLAGS=(-std=c11 -Wall -Wextra -Werror -O2)

echo "== shared: cc cache_demo.c \$(pkg-config --cflags --libs keel)"
# shellcheck disable=SC2046  # pkg-config prints several words on purpose
"$CC" "${CFLAGS[@]}" cache_demo.c $(pkg-config --cflags --libs keel) -o demo_shared
readelf -d demo_shared | grep -q "NEEDED.*\[libkeel.so.$ABI\]" \
    || fail "demo_shared does not record libkeel.so.$ABI: $(readelf -d demo_shared | grep NEEDED)"
out_shared="$(LD_LIBRARY_PATH="$LIB" ./demo_shared)" || fail "demo_shared exited non-zero"
ldd_out="$(LD_LIBRARY_PATH="$LIB" ldd ./demo_shared)"
grep -q "libkeel.so.$ABI => $LIB/libkeel.so.$ABI" <<<"$ldd_out" \
    || fail "demo_shared does not load the installed library: $ldd_out"

echo "== static: cc -static cache_demo.c \$(pkg-config --static --cflags --libs keel)"
# shellcheck disable=SC2046
"$CC" "${CFLAGS[@]}" -static cache_demo.c $(pkg-config --static --cflags --libs keel) -o demo_static
if readelf -d demo_static 2>/dev/null | grep -q NEEDED; then
    fail "demo_static needs shared libraries: $(readelf -d demo_static | grep NEEDED)"
fi
out_static="$(env -u LD_LIBRARY_PATH ./demo_static)" || fail "demo_static exited non-zero"

for out in "$out_shared" "$out_static"; do
    grep -q "^keel $VERSION (header $VERSION)$" <<<"$out" || fail "unexpected demo output: $out"
    grep -q "KEEL_ERR_CACHE_ZERO_CAPACITY" <<<"$out" || fail "unexpected demo output: $out"
done
[[ "$out_shared" == "$out_static" ]] || fail "the shared and static programs printed different output"
printf '%s\n' "$out_static"
echo "test-install passed: $PREFIX had keel.h, libkeel.a, libkeel.so.$VERSION (SONAME libkeel.so.$ABI), keel.pc"
