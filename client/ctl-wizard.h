#pragma once
/* p11certctl enroll's wizard: each step (CA profile, credentials, storage,
 * destination, confirmation, output file, request, following the job)
 * asks on a terminal what the options left open. (ctl-wizard.c) */
#include "ctl-common.h"
#include "p11c-wire.h"

#include <gio/gunixfdlist.h>

G_BEGIN_DECLS

/* The wizard: what the options gave and what was asked, step by step. */
typedef struct {
  GOptionContext  *ctx;
  GDBusConnection *bus;
  gboolean         interactive;
  gboolean         asked;       /* something was asked: confirm before sending */
  /* options */
  char            *ca_name, *login, *otp_file, *storage, *token_spec, *pin_file, *key_type, *subject;
  char            *label, *name, *output, *password_file;
  gboolean         no_wait, yes;
  /* chosen */
  GArray          *cas;         /* P11cWireCa, from ListCas */
  const P11cWireCa *ca;         /* the chosen profile (in cas) */
  P11cWireToken    token;       /* the token (storage token) */
  gboolean         has_token;
  char            *otp, *pin, *password;   /* secrets */
  int              out_fd;      /* the PKCS#12 file we created (storage file) */
  GUnixFDList     *fds;
  char            *job;
} CtlWizard;

/* The options' values are checked (--storage, --key-type): -1, or the
 * exit code of the usage error printed */
int ctl_wizard_check_options (CtlWizard *w);
/* Runs the steps; the exit code */
int ctl_wizard_run (CtlWizard *w);
void ctl_wizard_clear (CtlWizard *w);

G_END_DECLS
