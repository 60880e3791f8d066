#pragma once
/* gettext for the desktop app: the project's one domain (common/p11c-i18n.h). */
#include "p11c-i18n.h"
