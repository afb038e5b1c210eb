# Sourced by the GPU scripts (gpu_all.sh, gpu_nccl.sh, gpu_eval.sh): appends to the caller's
# CMAKE_ARGS array what a bare GPU machine needs. Its image has no CUnit: the Debian
# libcunit1 / libcunit1-dev packages carried in $ROOT/.deps are unpacked into /tmp/terse-cunit
# (dpkg -x, nothing installed system-wide) and put on LD_LIBRARY_PATH; the gradients carried in
# $ROOT/.data/gradients become TERSE_DATA_DIR. Needs ROOT and CMAKE_ARGS set by the caller.
if [ ! -f /usr/include/CUnit/CUnit.h ] && ls "$ROOT"/.deps/libcunit1*.deb >/dev/null 2>&1; then
    CU=/tmp/terse-cunit
    if [ ! -d "$CU/usr/include/CUnit" ]; then
        rm -rf "$CU" && mkdir -p "$CU"
        for deb in "$ROOT"/.deps/libcunit1*.deb; do dpkg -x "$deb" "$CU"; done
    fi
    LIB=$(find "$CU" -name 'libcunit.so*' | head -1)
    LIBDIR=$(dirname "$LIB")
    [ -e "$LIBDIR/libcunit.so" ] || ln -sf "$(basename "$LIB")" "$LIBDIR/libcunit.so"
    export LD_LIBRARY_PATH="$LIBDIR:${LD_LIBRARY_PATH:-}"
    CMAKE_ARGS+=(-DCUNIT_INCLUDE_DIR="$CU/usr/include" -DCUNIT_LIBRARY="$LIBDIR/libcunit.so")
fi
if [ -d "$ROOT/.data/gradients" ]; then
    CMAKE_ARGS+=(-DTERSE_DATA_DIR="$ROOT/.data/gradients")
fi
