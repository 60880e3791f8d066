#pragma once
/* gettext for the desktop app: one domain for the whole project. */
#ifndef GETTEXT_PACKAGE
#define GETTEXT_PACKAGE "p11certd"
#endif
#include <glib/gi18n.h>
