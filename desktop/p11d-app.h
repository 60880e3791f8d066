#pragma once
/* The app's windows and dialogs, opened from actions and notifications. */
#include <adwaita.h>

G_BEGIN_DECLS

/* p11d-window.c: the main window (tokens and certificates, live) */
GtkWindow *p11d_window_new (GtkApplication *app);
void p11d_window_show_cert (GtkWindow *window, const char *uri);
void p11d_window_show_token (GtkWindow *window, const char *path);

/* p11d-dialogs.c: delete a certificate (confirmation, token password,
 * result) and change a token's PIN (with the policy's hints) */
void p11d_delete_cert (GtkWindow *parent, const char *uri);
void p11d_change_pin (GtkWindow *parent, const char *token_path);
/* Sets @box's children to one label per rule of the PIN policy for @pin */
void p11d_show_rules (GtkBox *box, const char *pin);
/* A password field (secure buffer), named @name */
GtkWidget *p11d_password_entry (const char *name);
/* A message dialog with an OK button */
void p11d_message (GtkWindow *parent, const char *heading, const char *body);

/* p11d-wizard.c: the enrollment wizard */
void p11d_wizard_open (GtkWindow *parent);

/* Shows page @name of @stack, hiding the others (also from AT-SPI) */
void p11d_stack_show (GtkStack *stack, const char *name);

/* Names the unnamed icon buttons inside @widget (a password row's "show") */
void p11d_name_icon_buttons (GtkWidget *widget, const char *name);

/* Sets the accessible name of @widget */
void p11d_set_accessible_name (gpointer widget, const char *name);

G_END_DECLS
