#!/bin/bash
# tests/system/check-install.sh BUILDDIR
#
# (d) `meson install --destdir` of BUILDDIR gives a tree with every expected
#     file, with the paths meson.build chose (prefix, bindir, libexecdir,
#     datadir, mandir, sysconfdir from the build options; systemd, polkit and
#     D-Bus directories from pkg-config the same way dbus/meson.build and
#     systemd/meson.build do), configured files that point at the installed
#     binaries, and no real configuration file (only *.example).
# Runs `meson install --no-rebuild`: build first (meson test does).
set -u

build=$(realpath "${1:?usage: check-install.sh BUILDDIR}")
fail=0
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
dest=$T/root

opt() {
  meson introspect "$build" --buildoptions |
    /usr/bin/python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]==sys.argv[1]][0])' "$1"
}
prefix=$(opt prefix)
abs() { [[ $1 == /* ]] && echo "$1" || echo "$prefix/$1"; }
bindir=$(abs "$(opt bindir)")
libexecdir=$(abs "$(opt libexecdir)")
datadir=$(abs "$(opt datadir)")
mandir=$(abs "$(opt mandir)")
sysconfdir=$(abs "$(opt sysconfdir)")
localedir=$(abs "$(opt localedir)")
pcvar() { pkg-config --define-variable="$1=$prefix" --variable="$2" "$3" 2>/dev/null; }
unitdir=$(pcvar rootprefix systemdsystemunitdir systemd); unitdir=${unitdir:-$prefix/lib/systemd/system}
sysusersdir=$(pcvar prefix sysusersdir systemd); sysusersdir=${sysusersdir:-$prefix/lib/sysusers.d}
actiondir=$(pcvar prefix actiondir polkit-gobject-1); actiondir=${actiondir:-$datadir/polkit-1/actions}
servicesdir=$(pcvar prefix system_bus_services_dir dbus-1); servicesdir=${servicesdir:-$datadir/dbus-1/system-services}

echo "checking: meson install --destdir into a temporary tree (prefix $prefix)"
if ! meson install -C "$build" --no-rebuild --quiet --destdir "$dest" >"$T/install.log" 2>&1; then
  echo "FAIL: meson install failed:"; cat "$T/install.log"; exit 1
fi

expected=(
  "$libexecdir/p11certd"
  "$bindir/p11certctl"
  "$datadir/dbus-1/system.d/org.p11certd.conf"
  "$servicesdir/org.p11certd.service"
  "$datadir/dbus-1/interfaces/org.p11certd1.xml"
  "$actiondir/org.p11certd.policy"
  "$datadir/polkit-1/rules.d/org.p11certd.rules"
  "$unitdir/p11certd.service"
  "$unitdir/p11certd-renew.service"
  "$unitdir/p11certd-renew.timer"
  "$sysusersdir/p11certd.conf"
  "$mandir/man8/p11certd.8"
  "$mandir/man1/p11certctl.1"
  "$mandir/man5/p11certd.conf.5"
  "$sysconfdir/p11certd/p11certd.conf.example"
  "$sysconfdir/p11certd/ca.d/example.conf.example"
  "$localedir/ru/LC_MESSAGES/p11certd.mo"
)
for f in "${expected[@]}"; do
  if [[ -f $dest$f ]]; then
    echo "ok: $f"
  else
    echo "FAIL: missing $f"; fail=1
  fi
done
for f in "$libexecdir/p11certd" "$bindir/p11certctl"; do
  [[ -x $dest$f ]] || { echo "FAIL: $f is not executable"; fail=1; }
done

if [[ -x $build/desktop/p11certd-tokens ]]; then   # the desktop app (-Ddesktop=auto/enabled)
  echo "checking: the desktop app"
  for f in "$bindir/p11certd-tokens" "$datadir/applications/org.p11certd.Tokens.desktop" \
           "$datadir/metainfo/org.p11certd.Tokens.metainfo.xml" \
           "$datadir/icons/hicolor/scalable/apps/org.p11certd.Tokens.svg" \
           "$datadir/dbus-1/services/org.p11certd.Tokens.service" \
           "$sysconfdir/xdg/autostart/org.p11certd.Tokens-autostart.desktop"; do
    if [[ -f $dest$f ]]; then echo "ok: $f"; else echo "FAIL: missing $f"; fail=1; fi
  done
fi

echo "checking: installed files point at the installed binaries"
check_line() {  # FILE REGEX
  if grep -qxE "$2" "$dest$1" 2>/dev/null; then echo "ok: $1: $2"; else echo "FAIL: $1 lacks a line $2"; fail=1; fi
}
check_line "$servicesdir/org.p11certd.service" "Exec=$libexecdir/p11certd"
check_line "$unitdir/p11certd.service" "ExecStart=$libexecdir/p11certd"
check_line "$unitdir/p11certd-renew.service" "ExecStart=$bindir/p11certctl renew --due"
if [[ -x $build/desktop/p11certd-tokens ]]; then
  check_line "$datadir/dbus-1/services/org.p11certd.Tokens.service" "Exec=$bindir/p11certd-tokens --gapplication-service"
  check_line "$sysconfdir/xdg/autostart/org.p11certd.Tokens-autostart.desktop" "Exec=$bindir/p11certd-tokens --background"
fi
if grep -l '@[A-Za-z_]*@' "$dest$unitdir"/p11certd* "$dest$servicesdir/org.p11certd.service" 2>/dev/null; then
  echo "FAIL: unsubstituted @placeholder@ in the files above"; fail=1
fi

echo "checking: the polkit actions carry their translations (merged from po/)"
if grep -q '<message xml:lang="ru">' "$dest$actiondir/org.p11certd.policy" 2>/dev/null; then
  echo "ok: $actiondir/org.p11certd.policy has Russian messages"
else
  echo "FAIL: $actiondir/org.p11certd.policy has no Russian messages"; fail=1
fi

echo "checking: no real configuration is installed (examples only)"
if [[ -e $dest$sysconfdir/p11certd/p11certd.conf ]] || ls "$dest$sysconfdir"/p11certd/ca.d/*.conf >/dev/null 2>&1; then
  echo "FAIL: a real configuration file is installed"; fail=1
else
  echo "ok: only *.example under $sysconfdir/p11certd"
fi

if [[ $fail -ne 0 ]]; then
  echo "installed tree:"; (cd "$dest" && find . -type f | sort)
  echo "FAIL: install tree"
else
  echo "PASS: install tree"
fi
exit $fail
