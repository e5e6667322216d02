#!/bin/sh
# vnsnap test-stream block generator / verifier.
#
# This ONE file defines the test stream. It is copied into the guest
# initramfs (/lib/vnsnap/blockgen.sh) where the source role generates the
# stream and the sink role verifies it, and it is run on the host by
# Fixtures/guest/expected-digest to compute the expected sha256. So the
# expected digest always comes from the same code the guests run.
#
# Portable: POSIX sh + POSIX awk (busybox awk in the guest, mawk/gawk on
# the host). Only string comparisons are used on zero-padded fields
# (busybox awk would read "0017" as octal if compared as a number).
#
# Stream format: blocks 0..N-1, each BS bytes (BS a multiple of 64),
# made of BS/64 lines of exactly 64 bytes (63 chars + "\n"):
#   BBBBBBBBBB LLLLL <46 filler chars>\n
# BBBBBBBBBB = block number, 10 digits zero padded
# LLLLL      = line number inside the block, 5 digits zero padded
# filler     = 46 chars of a lowercase alphabet rotated by (7*block+line)%26
#
# Usage:
#   blockgen.sh gen N BS [PACE_MS [SENT_STEP [SENT_FILE]]]
#       write the stream to stdout; sleep PACE_MS ms after each block
#       (needs `usleep`, i.e. busybox); every SENT_STEP blocks print
#       "VNSNAP sent blocks=K" to SENT_FILE (default /dev/console).
#   blockgen.sh verify N BS [STEP [RESULT_FILE]]
#       read a stream on stdin, print "VNSNAP progress blocks=K" to stdout
#       every STEP complete blocks (0 = never), and at EOF write one line
#       "blocks=K lines=L reason=R" to RESULT_FILE (default stdout), where
#       R is "none" if the stream is exactly the expected one.
#   blockgen.sh check N BS      exit 0 iff N and BS are valid

BLOCKGEN_LINE=64

# Shared awk code: vn_line(b, l) is the content (without "\n") of line l of
# block b. Everything else derives from it.
BLOCKGEN_AWK_LIB='
function vn_init(   a) {
    a = "abcdefghijklmnopqrstuvwxyz"
    VN_ALPHA = a a a
    VN_FILL = 46
}
function vn_line(b, l) {
    return sprintf("%010d %05d ", b, l) substr(VN_ALPHA, (7 * b + l) % 26 + 1, VN_FILL)
}
'

blockgen_check() {
    case "$1" in ''|*[!0-9]*) echo "blockgen: N must be a decimal number, got '$1'" >&2; return 1;; esac
    case "$2" in ''|*[!0-9]*) echo "blockgen: BS must be a decimal number, got '$2'" >&2; return 1;; esac
    # strip leading zeros (shell arithmetic and busybox awk would read octal)
    _n=$(echo "$1" | sed 's/^0*\([0-9]\)/\1/')
    _bs=$(echo "$2" | sed 's/^0*\([0-9]\)/\1/')
    if [ "$_bs" -lt "$BLOCKGEN_LINE" ] || [ $((_bs % BLOCKGEN_LINE)) -ne 0 ]; then
        echo "blockgen: BS must be a positive multiple of $BLOCKGEN_LINE, got $2" >&2
        return 1
    fi
    if [ "$_n" -gt 9999999999 ] 2>/dev/null; then
        echo "blockgen: N too large" >&2; return 1
    fi
    return 0
}

blockgen_gen() { # N BS [PACE_MS [SENT_STEP [SENT_FILE]]]
    blockgen_check "$1" "$2" || return 2
    awk -v n="$_n" -v bs="$_bs" -v pace="${3:-0}" -v step="${4:-0}" \
        -v sentfile="${5:-/dev/console}" "$BLOCKGEN_AWK_LIB"'
    BEGIN {
        vn_init()
        n += 0; bs += 0; pace += 0; step += 0
        lpb = bs / 64
        for (b = 0; b < n; b++) {
            for (l = 0; l < lpb; l++)
                print vn_line(b, l)
            if (step > 0 && ((b + 1) % step == 0 || b + 1 == n)) {
                printf "VNSNAP sent blocks=%d\n", b + 1 > sentfile
                fflush(sentfile)
            }
            if (pace > 0) {
                fflush()
                system("usleep " (pace * 1000))
            }
        }
        fflush()
    }'
}

blockgen_verify() { # N BS [STEP [RESULT_FILE]]
    blockgen_check "$1" "$2" || return 2
    awk -v n="$_n" -v bs="$_bs" -v step="${3:-0}" -v resfile="${4:--}" "$BLOCKGEN_AWK_LIB"'
    BEGIN {
        vn_init()
        n += 0; bs += 0; step += 0
        lpb = bs / 64
        want = n * lpb
        reason = ""
        blocks = 0
    }
    {
        i = NR - 1
        b = int(i / lpb)
        l = i - b * lpb
        if (tentative) {
            # a short line that was not the last one: real corruption
            reason = tentative
            tentative = ""
        }
        if (reason == "") {
            if (NR > want) {
                reason = "extra-data"
            } else if ($0 != (wline = vn_line(b, l))) {
                got = substr($0, 1, 10)
                if (got != sprintf("%010d", b))
                    r = "wrong-block:at=" b ",got=" (got ~ /^[0-9]+$/ ? got : "garbage")
                else
                    r = "bad-content:block=" b ",line=" l
                if (length($0) < length(wline) && index(wline, $0) == 1) {
                    # a prefix of the right line: fine if the stream ends here
                    reason = "short:partial-line"
                    tentative = r
                } else
                    reason = r
            }
        }
        if (l == lpb - 1) {
            blocks = b + 1
            if (step > 0 && blocks % step == 0) {
                printf "VNSNAP progress blocks=%d\n", blocks
                fflush()
            }
        }
    }
    END {
        lines = NR
        if (reason == "") {
            if (lines < want)
                reason = (lines % lpb) ? "short:partial-block" : "short"
        }
        if (reason == "") reason = "none"
        out = sprintf("blocks=%d lines=%d reason=%s", blocks, lines, reason)
        if (resfile == "-") print out
        else { print out > resfile; close(resfile) }
    }'
}

case "${1:-}" in
    gen) shift; blockgen_gen "$@" ;;
    verify) shift; blockgen_verify "$@" ;;
    check) shift; blockgen_check "$@" ;;
    *) echo "usage: blockgen.sh gen N BS [PACE_MS [SENT_STEP [SENT_FILE]]] | verify N BS [STEP [RESULT_FILE]] | check N BS" >&2; exit 2 ;;
esac
