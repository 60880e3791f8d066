#pragma once
/* A thin, exact layer over the PKCS#11 C API of one module: dlopen +
 * C_GetFunctionList, sessions, login, object search, key generation, signing
 * and certificate storage.  Every CK_RV is mapped to a P11C_ERROR here and
 * nowhere else.  Not thread-safe per session: callers hold the token's lock. */
#include <glib.h>
#include <p11-kit/pkcs11.h>
#include "p11c-openssl.h"

G_BEGIN_DECLS

typedef struct _P11cModule P11cModule;

/* @init_args (may be NULL): the module's own initialisation string, passed
 * as CK_C_INITIALIZE_ARGS.pReserved (NSS softokn needs
 * "configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db'"). */
P11cModule *p11c_module_load (const char *name_or_path, const char *init_args, GError **error);
void        p11c_module_unload (P11cModule *module);
const char *p11c_module_get_name (P11cModule *module);
const char *p11c_module_get_description (P11cModule *module);
CK_FUNCTION_LIST *p11c_module_get_functions (P11cModule *module);
/* Another application may have changed the tokens: a module that keeps its
 * own in-memory copy of the objects, loaded at C_Initialize (tpm2-pkcs11),
 * is reloaded before its next session.  No effect on other modules. */
void p11c_module_forget_objects (P11cModule *module);

typedef struct {
  CK_SLOT_ID    slot;
  CK_SLOT_INFO  slot_info;
  CK_TOKEN_INFO token_info;
} P11cSlotToken;

/* Slots with a token present, freshly enumerated (no caching). */
GArray *p11c_module_list_tokens (P11cModule *module, GError **error);
gboolean p11c_module_get_token_info (P11cModule *module, CK_SLOT_ID slot,
                                     CK_TOKEN_INFO *info, GError **error);

/* Map a CK_RV to P11C_ERROR with "@what: <text>".  Returns FALSE when rv is
 * not CKR_OK. */
gboolean p11c_ckr_check (CK_RV rv, const char *what, GError **error);
const char *p11c_ckr_name (CK_RV rv);
/* A length or count a module reports for an output buffer must fit the room
 * it was given: more means a broken or hostile module (TokenError naming
 * @what), never a read past the buffer. */
gboolean p11c_check_reported (CK_ULONG reported, CK_ULONG room, const char *what, GError **error);

typedef struct {
  P11cModule        *module;
  CK_FUNCTION_LIST  *f;
  CK_SLOT_ID         slot;
  CK_SESSION_HANDLE  handle;
  gboolean           logged_in;
} P11cSession;

P11cSession *p11c_session_open (P11cModule *module, CK_SLOT_ID slot, gboolean rw, GError **error);
/* Exactly one C_Login with the PIN: a wrong PIN is never retried here. */
gboolean p11c_session_login (P11cSession *s, const char *pin, GError **error);
void p11c_session_close (P11cSession *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (P11cSession, p11c_session_close)

/* The EC point inside a CKA_EC_POINT value, raw or DER-wrapped (told apart
 * by exact length and shape for a curve of @field_len bytes); a pointer into
 * @q, or NULL with a TokenError when it fits neither. */
const guint8 *p11c_ec_point_unwrap (const guint8 *q, gsize qlen, gsize field_len,
                                    gsize *point_len, GError **error);

/* Find objects of @klass (CK_UNAVAILABLE_INFORMATION = any) with optional id
 * and label.  Returns a GArray of CK_OBJECT_HANDLE. */
/* One C_FindObjects into @batch (room for @room handles) after
 * C_FindObjectsInit; *got is checked against @room. */
gboolean p11c_session_find_next (P11cSession *s, CK_OBJECT_HANDLE *batch, CK_ULONG room, CK_ULONG *got,
                                 GError **error);
GArray *p11c_session_find (P11cSession *s, CK_OBJECT_CLASS klass, GBytes *id,
                           const char *label, GError **error);
/* One variable-length attribute; NULL with error when unavailable. */
GBytes *p11c_session_get_bytes (P11cSession *s, CK_OBJECT_HANDLE obj,
                                CK_ATTRIBUTE_TYPE type, GError **error);
gboolean p11c_session_destroy (P11cSession *s, CK_OBJECT_HANDLE obj, GError **error);
gboolean p11c_session_set_pin (P11cSession *s, const char *old_pin, const char *new_pin, GError **error);

typedef enum {
  P11C_KEY_EC_P256,
  P11C_KEY_EC_P384,
  P11C_KEY_RSA_2048,
  P11C_KEY_RSA_3072,
} P11cKeyType;

gboolean    p11c_key_type_from_string (const char *name, P11cKeyType *out);
const char *p11c_key_type_to_string (P11cKeyType type);

/* Generate a key pair on the token: CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE,
 * !CKA_EXTRACTABLE, CKA_SIGN, the given id and label; with @decrypt (RSA
 * only: SCEP) also CKA_DECRYPT (and CKA_ENCRYPT on the public key). */
gboolean p11c_session_generate_key_pair (P11cSession *s, P11cKeyType type, gboolean decrypt,
                                         GBytes *id, const char *label,
                                         CK_OBJECT_HANDLE *pub_out,
                                         CK_OBJECT_HANDLE *priv_out,
                                         GError **error);
/* The public key of a CKO_PUBLIC_KEY object as an OpenSSL key */
EVP_PKEY *p11c_session_public_key (P11cSession *s, CK_OBJECT_HANDLE pub, GError **error);

/* Sign @data (already the message to be signed, not hashed) with SHA-256 /
 * SHA-384 using the token's CKM_ECDSA or CKM_RSA_PKCS (the digest is computed
 * here, so only the raw mechanisms that every token has are needed).
 * Returns the signature in X.509 encoding (DER ECDSA-Sig-Value for EC). */
GBytes *p11c_session_sign (P11cSession *s, CK_OBJECT_HANDLE priv, P11cKeyType type,
                           const EVP_MD *md, const guint8 *data, gsize len,
                           const char *pin, GError **error);

/* C_SignInit, then — when the key has CKA_ALWAYS_AUTHENTICATE — the
 * context-specific C_Login with @pin that such a key needs before each
 * signature.  A module that does not know the attribute (NSS answers
 * CKR_ATTRIBUTE_TYPE_INVALID) or cannot tell has keys without it. */
gboolean p11c_session_sign_init (P11cSession *s, CK_MECHANISM *mech, CK_OBJECT_HANDLE key,
                                 const char *pin, GError **error);

/* Store an X.509 certificate object (CKA_TOKEN, public) with id and label. */
gboolean p11c_session_store_cert (P11cSession *s, X509 *cert, GBytes *id,
                                  const char *label, CK_OBJECT_HANDLE *out,
                                  GError **error);

G_END_DECLS
