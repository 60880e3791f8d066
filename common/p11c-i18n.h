/* p11certd — translations of the clients (gettext domain GETTEXT_PACKAGE).
 *
 * Every client source that shows text to a person includes this header and
 * marks its strings: _("…") for a translated string, N_("…") for a string
 * in a static table translated later with _(), C_("context", "…") when the
 * same English word needs different translations, and
 * ngettext ("%d day", "%d days", n) for plurals.  The file must be listed in
 * po/POTFILES.in and its Russian translations added to po/ru.po
 * (`ninja -C build p11certd-update-po` regenerates the catalogue; the
 * `po-check` test fails on any untranslated or fuzzy message).
 *
 * The daemon does not translate: its messages are English for logs and
 * administrators, and clients translate from D-Bus error names and
 * structured details instead (docs/design.md, "Languages"). */
#pragma once

#ifndef GETTEXT_PACKAGE
#error "GETTEXT_PACKAGE must be defined (meson.build does it)"
#endif

#include <glib/gi18n.h>

G_BEGIN_DECLS

/* setlocale (LC_ALL, ""), then bind GETTEXT_PACKAGE to LOCALEDIR — or to
 * $P11CERTD_LOCALEDIR when set (an uninstalled build: the build tree's
 * po/ directory) — with UTF-8 output, and make it the default domain.
 * Call first thing in main() of every client. */
void p11c_i18n_init (void);

G_END_DECLS
