#!/usr/bin/env bash
# Checks a built vnsnap-peer .deb (tools/package --check): contents and control fields, the unit under
# `systemd-analyze verify`, dependency resolution by apt here, and install / remove / purge in an empty root.
# Exits non-zero naming the first thing wrong.
set -euo pipefail
DEB=${1:?usage: package-check.sh FILE.deb}
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'package check failed: %s\n' "$*" >&2; exit 1; }

say "contents and control fields"
contents=$(dpkg-deb --contents "$DEB" | awk '{ print $6 }' | sed 's|^\./|/|')
for path in /usr/bin/vnsnap-peer /lib/systemd/system/vnsnap-peer.service /etc/vnsnap-peer/peer.toml.example \
    /usr/share/man/man1/vnsnap-peer.1.gz /usr/share/man/man1/vnsnap-peer.snapshot.1.gz \
    /usr/share/man/man1/vnsnap-peer.schedules.1.gz /usr/share/bash-completion/completions/vnsnap-peer \
    /usr/share/zsh/vendor-completions/_vnsnap-peer /usr/share/fish/vendor_completions.d/vnsnap-peer.fish \
    /usr/share/doc/vnsnap-peer/copyright; do
    grep -qx "$path" <<<"$contents" || fail "$path is not in the package"
done
depends=$(dpkg-deb --field "$DEB" Depends)
for needed in qemu-system-x86 libsodium23 libzstd1 libc6; do
    grep -q "\b$needed\b" <<<"$depends" || fail "Depends lacks $needed: $depends"
done
if grep -Eq 'swift|/opt/' <<<"$depends"; then fail "Depends names the Swift toolchain: $depends"; fi
echo "    $(grep -c . <<<"$contents") paths; Depends: $depends"

WORK=$(mktemp -d /tmp/vnsnap-package-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
dpkg-deb --extract "$DEB" "$WORK/extracted"
ldd "$WORK/extracted/usr/bin/vnsnap-peer" | grep -q 'libswiftCore' && fail "the binary needs the Swift runtime from the toolchain"
"$WORK/extracted/usr/bin/vnsnap-peer" --help | grep -q 'schedules' || fail "the packaged binary does not run"
zcat "$WORK/extracted/usr/share/man/man1/vnsnap-peer.snapshot.1.gz" | grep -q '^\.Sh' ||
    fail "the snapshot man page is not an mdoc page"
man -l "$WORK/extracted/usr/share/man/man1/vnsnap-peer.1.gz" 2>/dev/null | grep -qi 'vnsnap-peer' ||
    echo "    (man not installed here: pages not rendered)"
bash -n "$WORK/extracted/usr/share/bash-completion/completions/vnsnap-peer" || fail "bash completion does not parse"

say "systemd-analyze verify of the unit"
# Verified against the packaged binary: ExecStart's path must exist, so the unit is checked from a copy whose
# ExecStart points into the extracted tree (everything else unchanged).
sed "s|/usr/bin/vnsnap-peer|$WORK/extracted/usr/bin/vnsnap-peer|" \
    "$WORK/extracted/lib/systemd/system/vnsnap-peer.service" >"$WORK/vnsnap-peer.service"
# --man=no: the Documentation= pages are checked above, inside the package (not installed here).
grep -q '^Documentation=man:vnsnap-peer(1) man:vnsnap-peer.run(1)$' "$WORK/vnsnap-peer.service" ||
    fail "the unit's Documentation= does not name the packaged pages"
grep -qx /usr/share/man/man1/vnsnap-peer.run.1.gz <<<"$contents" || fail "vnsnap-peer.run.1.gz is not in the package"
if ! out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$WORK/vnsnap-peer.service" 2>&1); then
    fail "systemd-analyze verify: $out"
fi
# verify prints warnings without failing: any about this unit count.
if grep -v 'man:' <<<"$out" | grep -q 'vnsnap-peer.service'; then fail "systemd-analyze verify: $out"; fi
echo "    unit verified${out:+ (notes: $(tr '\n' ' ' <<<"$out"))}"

say "apt resolves its dependencies here"
apt-get install --simulate --no-install-recommends "$DEB" >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; fail "apt cannot install it"; }
grep -q '^Inst vnsnap-peer' "$WORK/apt.log" || { cat "$WORK/apt.log"; fail "apt would not install vnsnap-peer"; }
echo "    here: $(grep -c '^Inst' "$WORK/apt.log") package(s) to install (vnsnap-peer and what it still needs)"
# As on a fresh Debian: apt told that nothing is installed must pull QEMU, libsodium and libzstd in.
: >"$WORK/empty-status"
apt-get install --simulate --no-install-recommends -o Dir::State::status="$WORK/empty-status" "$DEB" \
    >"$WORK/apt-fresh.log" 2>&1 || { cat "$WORK/apt-fresh.log"; fail "apt cannot install it on an empty system"; }
for needed in qemu-system-x86 qemu-utils libsodium23 libzstd1 libsqlite3-0 vnsnap-peer; do
    grep -q "^Inst $needed " "$WORK/apt-fresh.log" || fail "on an empty system apt would not install $needed"
done
echo "    on an empty system: $(grep -c '^Inst' "$WORK/apt-fresh.log") packages, qemu-system-x86, libsodium23 and libzstd1 among them"

say "install, remove and purge in an empty root"
ROOT=$WORK/root
mkdir -p "$ROOT/var/lib/dpkg/info" "$ROOT/var/lib/dpkg/updates" "$ROOT/var/lib/dpkg/triggers"
touch "$ROOT/var/lib/dpkg/status" "$ROOT/var/lib/dpkg/available"
dpkg=(dpkg --root="$ROOT" --force-script-chrootless --force-depends --log=/dev/null)
"${dpkg[@]}" --install "$DEB" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; fail "dpkg --install failed"; }
for path in /usr/bin/vnsnap-peer /lib/systemd/system/vnsnap-peer.service /etc/vnsnap-peer/peer.toml.example; do
    [[ -e $ROOT$path ]] || fail "$path not installed"
done
grep -q "copy /etc/vnsnap-peer/peer.toml.example" "$WORK/dpkg.log" || fail "postinst did not say how to configure"
# What the operator and the daemon add: a config, a keyring, and data.
cp "$ROOT/etc/vnsnap-peer/peer.toml.example" "$ROOT/etc/vnsnap-peer/peer.toml"
echo "AAAA" >"$ROOT/etc/vnsnap-peer/keyring"
mkdir -p "$ROOT/var/lib/vnsnap-peer/snapshots/1"
echo data >"$ROOT/var/lib/vnsnap-peer/catalog.sqlite"
"${dpkg[@]}" --remove vnsnap-peer >>"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; fail "dpkg --remove failed"; }
[[ ! -e $ROOT/usr/bin/vnsnap-peer && ! -e $ROOT/lib/systemd/system/vnsnap-peer.service ]] ||
    fail "remove left the binary or the unit"
[[ -e $ROOT/etc/vnsnap-peer/peer.toml.example ]] || fail "remove took the conffile (only purge should)"
"${dpkg[@]}" --purge vnsnap-peer >>"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; fail "dpkg --purge failed"; }
left=$(cd "$ROOT" && find . -mindepth 1 \( -path ./var/lib/dpkg -prune \) -o -print | sort)
expected=$(printf '%s\n' ./etc ./etc/vnsnap-peer ./etc/vnsnap-peer/keyring ./etc/vnsnap-peer/peer.toml ./var ./var/lib \
    ./var/lib/vnsnap-peer ./var/lib/vnsnap-peer/catalog.sqlite ./var/lib/vnsnap-peer/snapshots \
    ./var/lib/vnsnap-peer/snapshots/1 | sort)
[[ $left == "$expected" ]] || fail "purge left more (or less) than the operator's files and data: $left"
echo "    purge left only the operator's config and keyring, and the data"
say "package ok: $DEB"
