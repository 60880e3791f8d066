#!/bin/bash
# tests/system/check-layers.sh SRCDIR
#
# The daemon's core knows nothing of D-Bus (docs/design.md, "Layers"): no
# GVariant, no GDBus, no object paths, no bus or polkit names in daemon/
# outside the bus face (p11c-dbus*.c, p11c-bus.[ch] — the connection —,
# p11c-auth.[ch], p11c-main.c, which
# owns the bus name).  The wire codec (common/p11c-wire.[ch]) is where
# dictionaries are built and read.  Prints each offending line.
set -u

src=${1:?usage: check-layers.sh SRCDIR}
pattern='GVariant|GDBus|GUnixFDList|g_variant_|g_dbus_|/org/p11certd|org\.p11certd\.|P11C_DBUS_|P11C_ACTION_'
bad=$(cd "$src" && grep -nE "$pattern" daemon/*.c daemon/*.h \
        | grep -vE '^daemon/p11c-(dbus[a-z-]*\.[ch]|bus\.[ch]|auth\.[ch]|main\.c):')
if [ -n "$bad" ]; then
  echo "D-Bus below the bus face (move it to the bus face or common/p11c-wire):"
  echo "$bad"
  exit 1
fi
echo "ok: no D-Bus in the daemon's core"
