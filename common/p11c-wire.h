#pragma once
/* The wire: the a{sv} dictionaries of the D-Bus API (dbus/org.p11certd1.xml)
 * as typed C values, both ways.  Daemon, client and fuzzers share these
 * keys and codecs; nobody else spells a dictionary key.
 *
 * from_variant functions validate first (unknown keys, wrong types,
 * missing required keys, oversized strings → P11C_ERROR_INVALID_ARGS naming
 * the key) and leave @out cleared on error.  Secrets (PINs, one-time
 * passwords, passwords) are wipeable copies, wiped by the _clear functions. */
#include <glib.h>

G_BEGIN_DECLS

/* ---- keys ---------------------------------------------------------------- */

#define P11C_KEY_ALLOW_INTERACTION "allow_interaction"
#define P11C_KEY_CA                "ca"
#define P11C_KEY_STORAGE           "storage"
#define P11C_KEY_TOKEN             "token"
#define P11C_KEY_LOGIN             "login"
#define P11C_KEY_OTP               "otp"
#define P11C_KEY_PIN               "pin"
#define P11C_KEY_PASSWORD          "password"
#define P11C_KEY_KEY_TYPE          "key_type"
#define P11C_KEY_SUBJECT           "subject"
#define P11C_KEY_LABEL             "label"
#define P11C_KEY_NAME              "name"
#define P11C_KEY_FD                "fd"
#define P11C_KEY_REKEY             "rekey"
#define P11C_KEY_KEEP_KEY          "keep_key"

/* ---- Manager.Enroll(a{sv} request) ---------------------------------------- */

typedef struct {
  char     *ca;          /* required */
  char     *storage;     /* token | system | file; NULL: token */
  char     *token;       /* a PKCS#11 URI or a token's object path */
  char     *login;
  char     *otp;         /* secret */
  char     *pin;         /* secret */
  char     *password;    /* secret (file storage) */
  char     *key_type;
  char     *subject;
  char     *label;
  char     *name;        /* system storage: the entry */
  gboolean  has_fd;
  gint32    fd_index;    /* index into the message's fd list */
  gboolean  allow_interaction;
} P11cEnrollParams;

gboolean p11c_wire_enroll_from_variant (GVariant *dict, P11cEnrollParams *out, GError **error);
GVariant *p11c_wire_enroll_to_variant (const P11cEnrollParams *p);   /* floating a{sv} */
void p11c_enroll_params_clear (P11cEnrollParams *p);
/* What the polkit check reads before validation: "storage" (default
 * "token") and "ca" ("" when absent or not a string) of any dictionary. */
const char *p11c_wire_enroll_peek_storage (GVariant *dict);
const char *p11c_wire_enroll_peek_ca (GVariant *dict);

/* ---- Manager.Renew(s uri, a{sv} options) -------------------------------- */

typedef struct {
  char     *pin;         /* secret; NULL: the daemon's PIN file, if any */
  gboolean  rekey;       /* default TRUE */
  gboolean  allow_interaction;
} P11cRenewParams;

gboolean p11c_wire_renew_from_variant (GVariant *dict, P11cRenewParams *out, GError **error);
GVariant *p11c_wire_renew_to_variant (const P11cRenewParams *p);
void p11c_renew_params_clear (P11cRenewParams *p);

/* ---- Manager.ListCerts(a{sv} options) ----------------------------------- */

typedef struct {
  char     *token;       /* one token (URI or object path), or NULL */
  char     *storage;     /* token | system | file, or NULL: tokens and the system store */
  gboolean  allow_interaction;
} P11cListParams;

gboolean p11c_wire_list_from_variant (GVariant *dict, P11cListParams *out, GError **error);
GVariant *p11c_wire_list_to_variant (const P11cListParams *p);
void p11c_list_params_clear (P11cListParams *p);

/* ---- options of DeleteCert, ChangePin, RenewDue -------------------------- */

typedef struct {
  gboolean keep_key;           /* DeleteCert only */
  gboolean allow_interaction;
} P11cOptions;

/* @keep_key_allowed: whether "keep_key" is a valid key (DeleteCert) */
gboolean p11c_wire_options_from_variant (GVariant *dict, gboolean keep_key_allowed, P11cOptions *out,
                                         GError **error);
GVariant *p11c_wire_options_to_variant (const P11cOptions *o, gboolean keep_key_allowed);

/* ---- a certificate: ListCerts' aa{sv} -------------------------------------- */

typedef struct {
  char     *uri;
  char     *token;            /* its token's object path; "/": not on a token */
  char     *storage;          /* token | system */
  char     *label;
  char     *id;               /* CKA_ID, hex */
  GBytes   *der;
  gboolean  has_private_key;
  char     *ca;               /* the CA profile that issued it (issuance records), or NULL */
  gboolean  parsed;           /* FALSE: only uri…has_private_key and error are set */
  char     *subject;
  char     *issuer;
  char     *serial;
  gint64    not_before;
  gint64    not_after;
  char     *sha256;
  char     *key_type;
  gboolean  renewal_due;
  gint64    days_left;
  char     *error;            /* why it does not parse */
} P11cWireCert;

GVariant *p11c_wire_cert_to_variant (const P11cWireCert *cert);   /* floating a{sv} */
gboolean p11c_wire_cert_from_variant (GVariant *dict, P11cWireCert *out, GError **error);
void p11c_wire_cert_clear (P11cWireCert *cert);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (P11cWireCert, p11c_wire_cert_clear)

/* ---- a token: Token properties, ListTokens' aa{sv} ------------------------ */

typedef struct {
  char     *path;             /* ListTokens only */
  char     *label;
  char     *serial;
  char     *manufacturer;
  char     *model;
  char     *slot;
  char     *uri;
  char     *module;
  gboolean  present;
  gboolean  login_required;
  gboolean  pin_count_low;
  gboolean  pin_final_try;
  gboolean  pin_locked;
} P11cWireToken;

/* The org.p11certd1.Token properties (Label, Serial, …), a floating a{sv} */
GVariant *p11c_wire_token_props_to_variant (const P11cWireToken *token);
/* A ListTokens entry: path plus each property in snake_case (label, serial,
 * pin_count_low, …), a floating a{sv} */
GVariant *p11c_wire_token_to_variant (const P11cWireToken *token);
void p11c_wire_token_from_variant (GVariant *dict, P11cWireToken *out);
void p11c_wire_token_clear (P11cWireToken *token);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (P11cWireToken, p11c_wire_token_clear)

/* ---- a CA profile: ListCas' aa{sv} ------------------------------------------ */

typedef struct {
  char     *name;
  char     *type;          /* est | scep | local */
  char     *url;           /* "" for local */
  char     *label;         /* EST label, or "" */
  char     *key_type;
  gboolean  needs_login;   /* EST: login + one-time password */
  gboolean  needs_otp;     /* EST or SCEP (its challenge password) */
  char     *otp_name;      /* what the one-time password is called, or "" */
  gboolean  is_default;    /* default-ca= in p11certd.conf */
} P11cWireCa;

GVariant *p11c_wire_ca_to_variant (const P11cWireCa *ca);   /* floating a{sv} */
void p11c_wire_ca_from_variant (GVariant *dict, P11cWireCa *out);
void p11c_wire_ca_clear (P11cWireCa *ca);

/* ---- DeleteCert's result ------------------------------------------------- */

typedef struct {
  char    **removed;          /* URIs of the objects removed, the certificate first */
  char     *certificate;      /* the certificate's URI */
  guint32   keys_removed;
  char     *keys_kept;        /* why the keys stayed (English, for an admin), or NULL */
  guint32   keys_shared_with; /* other certificates that use the kept key */
} P11cWireDeleted;

GVariant *p11c_wire_deleted_to_variant (const P11cWireDeleted *d);   /* floating a{sv} */
void p11c_wire_deleted_from_variant (GVariant *dict, P11cWireDeleted *out);
void p11c_wire_deleted_clear (P11cWireDeleted *d);

/* ---- RenewDue's result ----------------------------------------------------- */

typedef struct {
  char       **jobs;           /* job object paths started (or already running) */
  char       **needs_person;   /* URIs of due certificates a person must renew */
  char       **not_renewable;  /* URIs of due certificates that cannot be renewed */
  GHashTable  *reasons;        /* URI → why (English) */
  GHashTable  *reason_codes;   /* URI → a stable reason id (pin-needed, not-in-place, …) */
} P11cWireDue;

/* The strv are NULL-terminated (never NULL once decoded); the tables map
 * char* → char* (the encoder reads them, the decoder makes them) */
GVariant *p11c_wire_due_to_variant (const P11cWireDue *due);   /* floating a{sv} */
void p11c_wire_due_from_variant (GVariant *dict, P11cWireDue *out);
void p11c_wire_due_clear (P11cWireDue *due);

/* ---- Manager signals ------------------------------------------------------- */

/* TokenInserted / TokenRemoved (o token, a{sv} info).  The module's fields
 * (label, serial, manufacturer, uri) are set only when it is recognized;
 * atr only when the event came from PC/SC. */
typedef struct {
  char     *token;         /* object path; "/" when no module recognises the card */
  char     *label;
  char     *serial;
  char     *manufacturer;
  char     *uri;
  char     *reader;
  gboolean  recognized;
  char     *atr;           /* hex, or NULL */
} P11cWireTokenEvent;

GVariant *p11c_wire_token_event_info (const P11cWireTokenEvent *ev);      /* floating a{sv} */
GVariant *p11c_wire_token_event_to_variant (const P11cWireTokenEvent *ev);  /* floating (oa{sv}) */
gboolean p11c_wire_token_event_from_variant (GVariant *params, P11cWireTokenEvent *out);
void p11c_wire_token_event_clear (P11cWireTokenEvent *ev);

/* CardInserted / CardRemoved (s reader, a{sv} info) */
typedef struct {
  char *reader;
  char *atr;               /* hex, or NULL (CardRemoved) */
} P11cWireCardEvent;

GVariant *p11c_wire_card_event_to_variant (const P11cWireCardEvent *ev);   /* floating (sa{sv}) */
gboolean p11c_wire_card_event_from_variant (GVariant *params, P11cWireCardEvent *out);
void p11c_wire_card_event_clear (P11cWireCardEvent *ev);

/* RenewalNeeded (s uri, x not_after, a{sv} info) */
typedef struct {
  char     *uri;
  gint64    not_after;
  char     *subject;
  char     *token;         /* object path, or NULL (not on a token) */
  char     *ca;
  gint64    days_left;
  char     *reason;        /* English */
  char     *reason_code;   /* a stable id, see RenewDue's reason_codes */
} P11cWireRenewalNeeded;

GVariant *p11c_wire_renewal_needed_info (const P11cWireRenewalNeeded *rn);        /* floating a{sv} */
GVariant *p11c_wire_renewal_needed_to_variant (const P11cWireRenewalNeeded *rn);  /* floating (sxa{sv}) */
gboolean p11c_wire_renewal_needed_from_variant (GVariant *params, P11cWireRenewalNeeded *out);
void p11c_wire_renewal_needed_clear (P11cWireRenewalNeeded *rn);

/* CertificateExpiring (s uri, x not_after) */
typedef struct {
  char   *uri;
  gint64  not_after;
} P11cWireExpiring;

GVariant *p11c_wire_expiring_to_variant (const P11cWireExpiring *ex);   /* floating (sx) */
gboolean p11c_wire_expiring_from_variant (GVariant *params, P11cWireExpiring *out);
void p11c_wire_expiring_clear (P11cWireExpiring *ex);

/* ---- org.p11certd1.Job properties ---------------------------------------- */

#define P11C_JOB_OPERATION      "Operation"
#define P11C_JOB_STATE          "State"
#define P11C_JOB_PROGRESS       "Progress"
#define P11C_JOB_ATTEMPT        "Attempt"
#define P11C_JOB_RETRY_AT       "RetryAt"
#define P11C_JOB_ERROR          "Error"
#define P11C_JOB_ERROR_MESSAGE  "ErrorMessage"
#define P11C_JOB_ERROR_DETAILS  "ErrorDetails"
#define P11C_JOB_RESULT         "Result"
#define P11C_JOB_OWNER          "Owner"

typedef struct {
  char     *operation;
  char     *state;
  double    progress;
  guint32   attempt;
  gint64    retry_at;
  char     *error;          /* D-Bus error name, "" while none */
  char     *error_message;
  GVariant *error_details;  /* a{sv}, never NULL once decoded */
  char     *result;
  guint32   owner;
} P11cWireJob;

GVariant *p11c_wire_job_to_variant (const P11cWireJob *job);   /* floating a{sv}, every property */
/* Absent properties (another user's job shows only the public ones) keep
 * their defaults: "" strings, 0 numbers, an empty ErrorDetails. */
void p11c_wire_job_from_variant (GVariant *props, P11cWireJob *out);
/* Apply the properties present in @changed (PropertiesChanged, GetAll) */
void p11c_wire_job_update (P11cWireJob *job, GVariant *changed);
void p11c_wire_job_clear (P11cWireJob *job);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (P11cWireJob, p11c_wire_job_clear)

/* What a job shows to users other than its owner and root: what runs and
 * how far it is (Operation, State, Progress, Attempt, RetryAt) — not its
 * Result, Owner, Error or ErrorMessage.  split_props divides an a{sv} of job
 * properties into those two parts (each a new floating a{sv}, or NULL when
 * empty). */
gboolean p11c_wire_job_property_is_public (const char *name);
void p11c_wire_job_split_props (GVariant *props, GVariant **public_part, GVariant **private_part);

/* The "allow_interaction" of a method's trailing a{sv} (unvalidated
 * arguments, before the polkit check); FALSE when there is none. */
gboolean p11c_wire_allow_interaction (GVariant *params);

G_END_DECLS
