/*
 * p11c-fault: a fault-injecting PKCS#11 wrapper module for the p11certd tests.
 *
 * It loads a real module (env P11C_FAULT_MODULE, default SoftHSM2) and
 * exposes a CK_FUNCTION_LIST (version 2.40) whose every entry forwards to the
 * real module, unless a rule in the fault file (env P11C_FAULT_FILE) says
 * otherwise.  The fault file is checked on every call (stat: dev, inode,
 * size, mtime, ctime) and reparsed when it changed; all per-rule counters are
 * reset on reparse.  See README.md for the rule format.
 *
 * If env P11C_FAULT_LOG is set, one line "C_Name rv=0x%08lx\n" is appended to
 * that file per call (one write() on an O_APPEND descriptor).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <dlfcn.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"

/* ------------------------------------------------------------------------ */
/* Function table (same order as struct ck_function_list)                    */

#define ALL_FUNCTIONS(N) \
  N(C_Initialize) N(C_Finalize) N(C_GetInfo) N(C_GetFunctionList) \
  N(C_GetSlotList) N(C_GetSlotInfo) N(C_GetTokenInfo) N(C_GetMechanismList) \
  N(C_GetMechanismInfo) N(C_InitToken) N(C_InitPIN) N(C_SetPIN) \
  N(C_OpenSession) N(C_CloseSession) N(C_CloseAllSessions) \
  N(C_GetSessionInfo) N(C_GetOperationState) N(C_SetOperationState) \
  N(C_Login) N(C_Logout) N(C_CreateObject) N(C_CopyObject) \
  N(C_DestroyObject) N(C_GetObjectSize) N(C_GetAttributeValue) \
  N(C_SetAttributeValue) N(C_FindObjectsInit) N(C_FindObjects) \
  N(C_FindObjectsFinal) N(C_EncryptInit) N(C_Encrypt) N(C_EncryptUpdate) \
  N(C_EncryptFinal) N(C_DecryptInit) N(C_Decrypt) N(C_DecryptUpdate) \
  N(C_DecryptFinal) N(C_DigestInit) N(C_Digest) N(C_DigestUpdate) \
  N(C_DigestKey) N(C_DigestFinal) N(C_SignInit) N(C_Sign) N(C_SignUpdate) \
  N(C_SignFinal) N(C_SignRecoverInit) N(C_SignRecover) N(C_VerifyInit) \
  N(C_Verify) N(C_VerifyUpdate) N(C_VerifyFinal) N(C_VerifyRecoverInit) \
  N(C_VerifyRecover) N(C_DigestEncryptUpdate) N(C_DecryptDigestUpdate) \
  N(C_SignEncryptUpdate) N(C_DecryptVerifyUpdate) N(C_GenerateKey) \
  N(C_GenerateKeyPair) N(C_WrapKey) N(C_UnwrapKey) N(C_DeriveKey) \
  N(C_SeedRandom) N(C_GenerateRandom) N(C_GetFunctionStatus) \
  N(C_CancelFunction) N(C_WaitForSlotEvent)

enum fn_id {
#define N(name) FN_##name,
  ALL_FUNCTIONS(N)
#undef N
  FN_COUNT
};

static const char *const fn_names[FN_COUNT] = {
#define N(name) #name,
  ALL_FUNCTIONS(N)
#undef N
};

#define FN_ANY (-1) /* rule function "*" */

/* Functions never matched by a "*" rule. */
static int
excluded_from_wildcard(int fn)
{
  return fn == FN_C_Initialize || fn == FN_C_Finalize || fn == FN_C_GetInfo ||
         fn == FN_C_GetFunctionList || fn == FN_C_GetSlotList ||
         fn == FN_C_GetSlotInfo;
}

/* Functions whose output info struct has a flags field we can patch. */
static int
has_info_flags(int fn)
{
  return fn == FN_C_GetTokenInfo || fn == FN_C_GetSlotInfo ||
         fn == FN_C_GetSessionInfo || fn == FN_C_GetMechanismInfo ||
         fn == FN_C_GetInfo;
}

/* ------------------------------------------------------------------------ */
/* Symbolic names                                                            */

struct named { const char *name; unsigned long value; };
#define V(x) { #x, (unsigned long) (x) },

static const struct named rv_names[] = {
  V(CKR_OK) V(CKR_CANCEL) V(CKR_HOST_MEMORY) V(CKR_SLOT_ID_INVALID)
  V(CKR_GENERAL_ERROR) V(CKR_FUNCTION_FAILED) V(CKR_ARGUMENTS_BAD)
  V(CKR_NO_EVENT) V(CKR_NEED_TO_CREATE_THREADS) V(CKR_CANT_LOCK)
  V(CKR_ATTRIBUTE_READ_ONLY) V(CKR_ATTRIBUTE_SENSITIVE)
  V(CKR_ATTRIBUTE_TYPE_INVALID) V(CKR_ATTRIBUTE_VALUE_INVALID)
  V(CKR_ACTION_PROHIBITED) V(CKR_DATA_INVALID) V(CKR_DATA_LEN_RANGE)
  V(CKR_DEVICE_ERROR) V(CKR_DEVICE_MEMORY) V(CKR_DEVICE_REMOVED)
  V(CKR_ENCRYPTED_DATA_INVALID) V(CKR_ENCRYPTED_DATA_LEN_RANGE)
  V(CKR_FUNCTION_CANCELED) V(CKR_FUNCTION_NOT_PARALLEL)
  V(CKR_FUNCTION_NOT_SUPPORTED) V(CKR_KEY_HANDLE_INVALID)
  V(CKR_KEY_SIZE_RANGE) V(CKR_KEY_TYPE_INCONSISTENT) V(CKR_KEY_NOT_NEEDED)
  V(CKR_KEY_CHANGED) V(CKR_KEY_NEEDED) V(CKR_KEY_INDIGESTIBLE)
  V(CKR_KEY_FUNCTION_NOT_PERMITTED) V(CKR_KEY_NOT_WRAPPABLE)
  V(CKR_KEY_UNEXTRACTABLE) V(CKR_MECHANISM_INVALID)
  V(CKR_MECHANISM_PARAM_INVALID) V(CKR_OBJECT_HANDLE_INVALID)
  V(CKR_OPERATION_ACTIVE) V(CKR_OPERATION_NOT_INITIALIZED)
  V(CKR_PIN_INCORRECT) V(CKR_PIN_INVALID) V(CKR_PIN_LEN_RANGE)
  V(CKR_PIN_EXPIRED) V(CKR_PIN_LOCKED) V(CKR_SESSION_CLOSED)
  V(CKR_SESSION_COUNT) V(CKR_SESSION_HANDLE_INVALID)
  V(CKR_SESSION_PARALLEL_NOT_SUPPORTED) V(CKR_SESSION_READ_ONLY)
  V(CKR_SESSION_EXISTS) V(CKR_SESSION_READ_ONLY_EXISTS)
  V(CKR_SESSION_READ_WRITE_SO_EXISTS) V(CKR_SIGNATURE_INVALID)
  V(CKR_SIGNATURE_LEN_RANGE) V(CKR_TEMPLATE_INCOMPLETE)
  V(CKR_TEMPLATE_INCONSISTENT) V(CKR_TOKEN_NOT_PRESENT)
  V(CKR_TOKEN_NOT_RECOGNIZED) V(CKR_TOKEN_WRITE_PROTECTED)
  V(CKR_UNWRAPPING_KEY_SIZE_RANGE) V(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT)
  V(CKR_USER_ALREADY_LOGGED_IN) V(CKR_USER_NOT_LOGGED_IN)
  V(CKR_USER_PIN_NOT_INITIALIZED) V(CKR_USER_TYPE_INVALID)
  V(CKR_USER_ANOTHER_ALREADY_LOGGED_IN) V(CKR_USER_TOO_MANY_TYPES)
  V(CKR_WRAPPED_KEY_INVALID) V(CKR_WRAPPED_KEY_LEN_RANGE)
  V(CKR_WRAPPING_KEY_HANDLE_INVALID) V(CKR_WRAPPING_KEY_SIZE_RANGE)
  V(CKR_WRAPPING_KEY_TYPE_INCONSISTENT) V(CKR_RANDOM_SEED_NOT_SUPPORTED)
  V(CKR_RANDOM_NO_RNG) V(CKR_DOMAIN_PARAMS_INVALID)
  V(CKR_CURVE_NOT_SUPPORTED) V(CKR_BUFFER_TOO_SMALL)
  V(CKR_SAVED_STATE_INVALID) V(CKR_INFORMATION_SENSITIVE)
  V(CKR_STATE_UNSAVEABLE) V(CKR_CRYPTOKI_NOT_INITIALIZED)
  V(CKR_CRYPTOKI_ALREADY_INITIALIZED) V(CKR_MUTEX_BAD)
  V(CKR_MUTEX_NOT_LOCKED) V(CKR_NEW_PIN_MODE) V(CKR_NEXT_OTP)
  V(CKR_EXCEEDED_MAX_ITERATIONS) V(CKR_FIPS_SELF_TEST_FAILED)
  V(CKR_LIBRARY_LOAD_FAILED) V(CKR_PIN_TOO_WEAK) V(CKR_PUBLIC_KEY_INVALID)
  V(CKR_FUNCTION_REJECTED) V(CKR_VENDOR_DEFINED)
  { NULL, 0 }
};

static const struct named flag_names[] = {
  /* slot flags */
  V(CKF_TOKEN_PRESENT) V(CKF_REMOVABLE_DEVICE) V(CKF_HW_SLOT)
  /* token flags */
  V(CKF_RNG) V(CKF_WRITE_PROTECTED) V(CKF_LOGIN_REQUIRED)
  V(CKF_USER_PIN_INITIALIZED) V(CKF_RESTORE_KEY_NOT_NEEDED)
  V(CKF_CLOCK_ON_TOKEN) V(CKF_PROTECTED_AUTHENTICATION_PATH)
  V(CKF_DUAL_CRYPTO_OPERATIONS) V(CKF_TOKEN_INITIALIZED)
  V(CKF_SECONDARY_AUTHENTICATION) V(CKF_USER_PIN_COUNT_LOW)
  V(CKF_USER_PIN_FINAL_TRY) V(CKF_USER_PIN_LOCKED)
  V(CKF_USER_PIN_TO_BE_CHANGED) V(CKF_SO_PIN_COUNT_LOW)
  V(CKF_SO_PIN_FINAL_TRY) V(CKF_SO_PIN_LOCKED) V(CKF_SO_PIN_TO_BE_CHANGED)
  /* session flags */
  V(CKF_RW_SESSION) V(CKF_SERIAL_SESSION)
  { NULL, 0 }
};
#undef V

/* ------------------------------------------------------------------------ */
/* Diagnostics                                                               */

static void
warn(const char *fmt, ...)
{
  char buf[1024];
  va_list ap;
  int n = snprintf(buf, sizeof buf, "p11c-fault: ");
  va_start(ap, fmt);
  vsnprintf(buf + n, sizeof buf - (size_t) n, fmt, ap);
  va_end(ap);
  size_t len = strlen(buf);
  if (len < sizeof buf - 1) {
    buf[len++] = '\n';
  } else {
    buf[sizeof buf - 2] = '\n';
    len = sizeof buf - 1;
  }
  ssize_t w = write(STDERR_FILENO, buf, len);
  (void) w;
}

/* Warn about a bad line only once per process, even across reloads
 * (protected by rules_lock). */
#define MAX_WARNED 256
static char *warned[MAX_WARNED];
static int n_warned;

static void
warn_line_once(const char *line, const char *why)
{
  for (int i = 0; i < n_warned; i++)
    if (strcmp(warned[i], line) == 0)
      return;
  if (n_warned < MAX_WARNED) {
    char *copy = strdup(line);
    if (copy)
      warned[n_warned++] = copy;
  }
  warn("ignoring fault rule \"%s\": %s", line, why);
}

/* ------------------------------------------------------------------------ */
/* Rules                                                                     */

struct rule {
  int fn;                 /* enum fn_id or FN_ANY */
  int has_rv;
  CK_RV rv;
  long count;             /* fires left; -1 = unlimited */
  unsigned long after;    /* matching calls still to skip before firing */
  size_t count_off, count_len; /* where the values sit in file_text */
  size_t after_off, after_len; /* (len 0 = not given in the file) */
  unsigned long delay_ms;
  CK_FLAGS flags_set, flags_clear;
  int hide, absent, swapped, always_auth;
  unsigned long grow, overcount;
};

/* What the rules decided for one call. */
struct fault {
  int has_rv;
  CK_RV rv;
  unsigned long delay_ms;
  CK_FLAGS flags_set, flags_clear;
  int hide, absent, swapped, always_auth;
  unsigned long grow, overcount;
};

static pthread_mutex_t rules_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rule *rules;
static size_t n_rules;
static int have_file;     /* whether cached stat below is valid */
static struct stat file_st;
static char *file_path;   /* path the cache refers to */
static char *file_text;   /* unmodified text of the parsed file */

static int
parse_ulong(const char *s, unsigned long *out)
{
  char *end;
  if (!*s || *s == '-' || *s == '+')
    return 0;
  errno = 0;
  unsigned long v = strtoul(s, &end, 0);
  if (errno || *end)
    return 0;
  *out = v;
  return 1;
}

static int
lookup_named(const struct named *tab, const char *s, unsigned long *out)
{
  for (; tab->name; tab++)
    if (strcmp(tab->name, s) == 0) {
      *out = tab->value;
      return 1;
    }
  return parse_ulong(s, out);
}

/* "A|B|0x10" */
static int
parse_flags(const char *s, CK_FLAGS *out)
{
  char buf[256];
  if (strlen(s) >= sizeof buf)
    return 0;
  strcpy(buf, s);
  CK_FLAGS acc = 0;
  char *save = NULL;
  int any = 0;
  for (char *tok = strtok_r(buf, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
    unsigned long v;
    if (!lookup_named(flag_names, tok, &v))
      return 0;
    acc |= v;
    any = 1;
  }
  if (!any)
    return 0;
  *out = acc;
  return 1;
}

static int
lookup_fn(const char *s)
{
  if (strcmp(s, "*") == 0)
    return FN_ANY;
  for (int i = 0; i < FN_COUNT; i++)
    if (strcmp(fn_names[i], s) == 0)
      return i;
  return -2;
}

/* Parse one line (already stripped of comment and surrounding blanks).
 * Returns 1 and fills *r on success, 0 (with *why) on error. */
/* The 0/1 keys, each allowed on one function only */
static const struct switch_key {
  const char *key, *bad, *only;
  int fn;
  size_t off;
} switch_keys[] = {
  { "hide", "bad hide (0 or 1)", "hide= only for C_GetSlotList", FN_C_GetSlotList, offsetof(struct rule, hide) },
  { "absent", "bad absent (0 or 1)", "absent= only for C_GetSlotInfo", FN_C_GetSlotInfo,
    offsetof(struct rule, absent) },
  { "swapped", "bad swapped (0 or 1)", "swapped= only for C_GetTokenInfo", FN_C_GetTokenInfo,
    offsetof(struct rule, swapped) },
  { "always_auth", "bad always_auth (0 or 1)", "always_auth= only for C_GenerateKeyPair", FN_C_GenerateKeyPair,
    offsetof(struct rule, always_auth) },
};

static const struct switch_key *
find_switch(const char *key)
{
  for (size_t i = 0; i < sizeof switch_keys / sizeof switch_keys[0]; i++)
    if (strcmp(key, switch_keys[i].key) == 0)
      return &switch_keys[i];
  return NULL;
}

static int
parse_rule(char *line, const char *base, struct rule *r, const char **why)
{
  memset(r, 0, sizeof *r);
  r->count = -1;

  char *save = NULL;
  char *tok = strtok_r(line, " \t", &save);
  r->fn = lookup_fn(tok);
  if (r->fn == -2) {
    *why = "unknown function";
    return 0;
  }
  int actions = 0;
  while ((tok = strtok_r(NULL, " \t", &save))) {
    char *eq = strchr(tok, '=');
    if (!eq || eq == tok || !eq[1]) {
      *why = "expected key=value";
      return 0;
    }
    const char *val = eq + 1;
    int op = 0;
    if (eq[-1] == '+' || eq[-1] == '-') {
      op = eq[-1];
      eq[-1] = '\0';
    }
    *eq = '\0';
    const char *key = tok;
    unsigned long v;
    const struct switch_key *sw;

    if (op) {
      CK_FLAGS f;
      if (strcmp(key, "flags") != 0) {
        *why = "only flags+= and flags-= take an operator";
        return 0;
      }
      if (!parse_flags(val, &f)) {
        *why = "bad flags value";
        return 0;
      }
      if (r->fn == FN_ANY || !has_info_flags(r->fn)) {
        *why = "flags+=/-= only for C_GetTokenInfo, C_GetSlotInfo, "
               "C_GetSessionInfo, C_GetMechanismInfo, C_GetInfo";
        return 0;
      }
      if (op == '+')
        r->flags_set |= f;
      else
        r->flags_clear |= f;
      actions++;
    } else if (strcmp(key, "rv") == 0) {
      if (!lookup_named(rv_names, val, &v)) {
        *why = "bad rv value";
        return 0;
      }
      r->has_rv = 1;
      r->rv = v;
      actions++;
    } else if (strcmp(key, "count") == 0) {
      if (!parse_ulong(val, &v) || v > 0x7fffffffUL) {
        *why = "bad count";
        return 0;
      }
      r->count = (long) v;
      r->count_off = (size_t) (val - base);
      r->count_len = strlen(val);
    } else if (strcmp(key, "after") == 0) {
      if (!parse_ulong(val, &v)) {
        *why = "bad after";
        return 0;
      }
      r->after = v;
      r->after_off = (size_t) (val - base);
      r->after_len = strlen(val);
    } else if (strcmp(key, "delay") == 0) {
      if (!parse_ulong(val, &v) || v > 3600000UL) {
        *why = "bad delay (milliseconds, at most 3600000)";
        return 0;
      }
      r->delay_ms = v;
      actions++;
    } else if ((sw = find_switch(key)) != NULL) {
      if (!parse_ulong(val, &v) || v > 1) {
        *why = sw->bad;
        return 0;
      }
      if (r->fn != sw->fn) {
        *why = sw->only;
        return 0;
      }
      *(int *) ((char *) r + sw->off) = (int) v;
      actions++;
    } else if (strcmp(key, "grow") == 0) {
      if (!parse_ulong(val, &v) || v == 0 || v > 1UL << 20) {
        *why = "bad grow (1..1048576)";
        return 0;
      }
      if (r->fn != FN_C_GetAttributeValue && r->fn != FN_C_Sign) {
        *why = "grow= only for C_GetAttributeValue and C_Sign";
        return 0;
      }
      r->grow = v;
      actions++;
    } else if (strcmp(key, "overcount") == 0) {
      if (!parse_ulong(val, &v) || v == 0 || v > 1UL << 20) {
        *why = "bad overcount (1..1048576)";
        return 0;
      }
      if (r->fn != FN_C_FindObjects && r->fn != FN_C_GetSlotList) {
        *why = "overcount= only for C_FindObjects and C_GetSlotList";
        return 0;
      }
      r->overcount = v;
      actions++;
    } else {
      *why = "unknown key";
      return 0;
    }
  }
  if (!actions) {
    *why = "no action (rv=, delay=, flags+=, flags-=, hide=, absent=, swapped=, always_auth=, grow=, overcount=)";
    return 0;
  }
  return 1;
}

/* text is a writable copy of file_text (same layout). */
static void
parse_text(char *text)
{
  size_t cap = 0;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *hash = strchr(line, '#');
    if (hash)
      *hash = '\0';
    while (*line && isspace((unsigned char) *line))
      line++;
    size_t len = strlen(line);
    while (len && isspace((unsigned char) line[len - 1]))
      line[--len] = '\0';
    if (!len)
      continue;

    char orig[512];
    snprintf(orig, sizeof orig, "%s", line);
    struct rule r;
    const char *why = "";
    if (!parse_rule(line, text, &r, &why)) {
      warn_line_once(orig, why);
      continue;
    }
    if (n_rules == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      struct rule *n = realloc(rules, ncap * sizeof *n);
      if (!n)
        return;
      rules = n;
      cap = ncap;
    }
    rules[n_rules++] = r;
  }
}

static void
clear_rules(void)
{
  free(rules);
  rules = NULL;
  n_rules = 0;
  free(file_text);
  file_text = NULL;
}

/* Takes ownership of text; parses it into rules. */
static void
load_text(char *text)
{
  clear_rules();
  char *copy = strdup(text);
  if (!copy) {
    free(text);
    return;
  }
  file_text = text;
  parse_text(copy);
  free(copy);
}

static int
same_stat(const struct stat *a, const struct stat *b)
{
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
         a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
         a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
         a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
         a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Called with rules_lock held. */
static void
refresh_rules(void)
{
  const char *path = getenv("P11C_FAULT_FILE");
  struct stat st;

  if (!path || !*path || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (have_file || n_rules)
      clear_rules();
    have_file = 0;
    return;
  }
  if (have_file && file_path && strcmp(file_path, path) == 0 && same_stat(&st, &file_st))
    return;

  clear_rules();
  have_file = 0;
  free(file_path);
  file_path = strdup(path);
  if (!file_path)
    return;

  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  struct stat fst;
  if (fstat(fd, &fst) != 0 || fst.st_size > 1024 * 1024) {
    close(fd);
    return;
  }
  size_t size = (size_t) fst.st_size;
  char *text = malloc(size + 1);
  if (!text) {
    close(fd);
    return;
  }
  size_t got = 0;
  while (got < size) {
    ssize_t n = read(fd, text + got, size - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t) n;
  }
  close(fd);
  text[got] = '\0';
  load_text(text);
  /* Remember the stat of what we actually read (fstat of the opened file);
   * if it was replaced meanwhile, the next call sees a different stat. */
  file_st = fst;
  have_file = 1;
}

/* Evaluate the rules for one call of fn.  Returns the accumulated fault. */
struct span { size_t off, len; unsigned long value; };

static int
span_cmp(const void *a, const void *b)
{
  const struct span *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}

/* Persist the current after=/count= values: rewrite the fault file
 * atomically (temp file + rename) with those values substituted, so that the
 * state survives across processes.  Called with rules_lock held. */
static void
persist_counters(void)
{
  static int warned_persist;
  if (!file_text || !file_path)
    return;
  size_t n = 0;
  struct span *sp = calloc(2 * n_rules + 1, sizeof *sp);
  if (!sp)
    return;
  for (size_t i = 0; i < n_rules; i++) {
    if (rules[i].count_len)
      sp[n++] = (struct span) { rules[i].count_off, rules[i].count_len,
                                (unsigned long) rules[i].count };
    if (rules[i].after_len)
      sp[n++] = (struct span) { rules[i].after_off, rules[i].after_len, rules[i].after };
  }
  qsort(sp, n, sizeof *sp, span_cmp);

  size_t tlen = strlen(file_text);
  char *out = malloc(tlen + 24 * n + 1);
  if (!out) {
    free(sp);
    return;
  }
  size_t o = 0, pos = 0;
  for (size_t i = 0; i < n; i++) {
    memcpy(out + o, file_text + pos, sp[i].off - pos);
    o += sp[i].off - pos;
    o += (size_t) sprintf(out + o, "%lu", sp[i].value);
    pos = sp[i].off + sp[i].len;
  }
  memcpy(out + o, file_text + pos, tlen - pos);
  o += tlen - pos;
  out[o] = '\0';
  free(sp);

  size_t plen = strlen(file_path);
  char *tmp = malloc(plen + 16);
  struct stat tmp_st;
  int ok = 0;
  if (tmp) {
    memcpy(tmp, file_path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd >= 0) {
      size_t done = 0;
      while (done < o) {
        ssize_t w = write(fd, out + done, o - done);
        if (w < 0 && errno == EINTR)
          continue;
        if (w <= 0)
          break;
        done += (size_t) w;
      }
      if (fchmod(fd, file_st.st_mode & 07777) != 0 || fstat(fd, &tmp_st) != 0)
        done = (size_t) -1;
      if (close(fd) == 0 && done == o && rename(tmp, file_path) == 0)
        ok = 1;
      else
        unlink(tmp);
    }
    free(tmp);
  }
  struct stat st;
  if (ok && stat(file_path, &st) == 0 && st.st_dev == tmp_st.st_dev &&
      st.st_ino == tmp_st.st_ino) {
    /* The file now holds exactly our in-memory state; reparse our own text
     * to recompute the value offsets, and remember its stat. */
    file_st = st;
    load_text(out);
    return;
  }
  if (ok) {
    /* Someone replaced the file right after us: reparse it next call. */
    have_file = 0;
    free(out);
    return;
  }
  free(out);
  if (!warned_persist) {
    warned_persist = 1;
    warn("cannot rewrite %s to persist count=/after= (%s); counting in memory only",
         file_path, strerror(errno));
  }
}

static void log_line(const char *fmt, const char *name, unsigned long value);

static void
evaluate(int fn, struct fault *f)
{
  int dirty = 0;
  memset(f, 0, sizeof *f);
  pthread_mutex_lock(&rules_lock);
  refresh_rules();
  for (size_t i = 0; i < n_rules; i++) {
    struct rule *r = &rules[i];
    if (r->fn == FN_ANY ? excluded_from_wildcard(fn) : r->fn != fn)
      continue;
    if (r->count == 0)
      continue;
    if (r->after > 0) {
      r->after--;
      dirty = 1;
      continue;
    }
    /* Only the first firing rv rule decides the return value; later rv
     * rules are neither applied nor consumed for this call. */
    if (r->has_rv && f->has_rv)
      continue;
    if (r->count > 0) {
      r->count--;
      dirty = 1;
    }
    if (r->has_rv) {
      f->has_rv = 1;
      f->rv = r->rv;
    }
    f->delay_ms += r->delay_ms;
    f->flags_set |= r->flags_set;
    f->flags_clear |= r->flags_clear;
    f->hide |= r->hide;
    f->absent |= r->absent;
    f->swapped |= r->swapped;
    f->always_auth |= r->always_auth;
    f->grow += r->grow;
    f->overcount += r->overcount;
  }
  if (dirty)
    persist_counters();
  pthread_mutex_unlock(&rules_lock);

  if (f->delay_ms) {
    /* "+NAME delay=MS": the call is held from now on (tests wait for this line) */
    log_line("+%s delay=%lu\n", fn_names[fn], (unsigned long) f->delay_ms);
    struct timespec ts = { (time_t) (f->delay_ms / 1000),
                           (long) (f->delay_ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
      ;
  }
}

/* ------------------------------------------------------------------------ */
/* Call log                                                                  */

/* One line, one write() on an O_APPEND descriptor: lines never mix. */
static void
log_line(const char *fmt, const char *name, unsigned long value)
{
  const char *path = getenv("P11C_FAULT_LOG");
  if (!path || !*path)
    return;
  int saved = errno;
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) {
    char line[128];
    int n = snprintf(line, sizeof line, fmt, name, value);
    ssize_t w = write(fd, line, (size_t) n);
    (void) w;
    close(fd);
  }
  errno = saved;
}

static CK_RV
log_call(int fn, CK_RV rv)
{
  log_line("%s rv=0x%08lx\n", fn_names[fn], (unsigned long) rv);
  return rv;
}

/* ------------------------------------------------------------------------ */
/* Real module                                                               */

static CK_FUNCTION_LIST_PTR real;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static CK_RV load_rv = CKR_GENERAL_ERROR;

static void
load_real(void)
{
  const char *path = getenv("P11C_FAULT_MODULE");
  if (!path || !*path)
    path = DEFAULT_MODULE;
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    warn("cannot load real module %s: %s", path, dlerror());
    return;
  }
  CK_C_GetFunctionList gfl;
  *(void **) &gfl = dlsym(h, "C_GetFunctionList");
  if (!gfl) {
    warn("%s has no C_GetFunctionList", path);
    return;
  }
  CK_FUNCTION_LIST_PTR list = NULL;
  CK_RV rv = gfl(&list);
  if (rv != CKR_OK || !list) {
    warn("C_GetFunctionList of %s failed: 0x%lx", path, (unsigned long) rv);
    load_rv = rv != CKR_OK ? rv : CKR_GENERAL_ERROR;
    return;
  }
  real = list;
  load_rv = CKR_OK;
}

/* ------------------------------------------------------------------------ */
/* Wrappers                                                                  */

/* Plain forwarding wrapper: rules may delay the call or replace its result. */
#define WRAP(name, params, args)                                          \
  static CK_RV w_##name params                                            \
  {                                                                       \
    struct fault f;                                                       \
    evaluate(FN_##name, &f);                                              \
    if (f.has_rv)                                                         \
      return log_call(FN_##name, f.rv);                                   \
    CK_RV rv = real->name ? real->name args : CKR_FUNCTION_NOT_SUPPORTED; \
    return log_call(FN_##name, rv);                                       \
  }

/* "swapped=1": another token in the slot (another serial number).  Only
 * C_GetTokenInfo rules can set it, so only CK_TOKEN_INFO comes here. */
static void
swap_token(void *info)
{
  CK_TOKEN_INFO *t = info;
  memcpy(t->serialNumber, "SWAPPED-0000000X", sizeof t->serialNumber);
}

/* Same, and afterwards patch info->flags (info is the last parameter). */
#define WRAP_INFO(name, params, args, info)                               \
  static CK_RV w_##name params                                            \
  {                                                                       \
    struct fault f;                                                       \
    evaluate(FN_##name, &f);                                              \
    if (f.has_rv)                                                         \
      return log_call(FN_##name, f.rv);                                   \
    CK_RV rv = real->name ? real->name args : CKR_FUNCTION_NOT_SUPPORTED; \
    if (rv == CKR_OK && (info)) {                                         \
      (info)->flags |= f.flags_set;                                       \
      (info)->flags &= ~f.flags_clear;                                    \
      if (f.absent)                                                       \
        (info)->flags &= ~(CK_FLAGS) CKF_TOKEN_PRESENT;                   \
      if (f.swapped)                                                      \
        swap_token(info);                                                 \
    }                                                                     \
    return log_call(FN_##name, rv);                                       \
  }

typedef CK_SESSION_HANDLE SH;
typedef CK_OBJECT_HANDLE OH;
typedef CK_BYTE_PTR BP;
typedef CK_ULONG UL;
typedef CK_ULONG_PTR ULP;
typedef CK_MECHANISM_PTR MP;
typedef CK_ATTRIBUTE_PTR AP;

WRAP(C_Initialize, (CK_VOID_PTR a), (a))
WRAP(C_Finalize, (CK_VOID_PTR a), (a))
WRAP_INFO(C_GetInfo, (CK_INFO_PTR a), (a), a)
WRAP_INFO(C_GetSlotInfo, (CK_SLOT_ID a, CK_SLOT_INFO_PTR b), (a, b), b)
WRAP_INFO(C_GetTokenInfo, (CK_SLOT_ID a, CK_TOKEN_INFO_PTR b), (a, b), b)
WRAP(C_GetMechanismList, (CK_SLOT_ID a, CK_MECHANISM_TYPE_PTR b, ULP c), (a, b, c))
WRAP_INFO(C_GetMechanismInfo, (CK_SLOT_ID a, CK_MECHANISM_TYPE b, CK_MECHANISM_INFO_PTR c), (a, b, c), c)
WRAP(C_InitToken, (CK_SLOT_ID a, BP b, UL c, BP d), (a, b, c, d))
WRAP(C_InitPIN, (SH a, BP b, UL c), (a, b, c))
WRAP(C_SetPIN, (SH a, BP b, UL c, BP d, UL e), (a, b, c, d, e))
WRAP(C_OpenSession, (CK_SLOT_ID a, CK_FLAGS b, CK_VOID_PTR c, CK_NOTIFY d, CK_SESSION_HANDLE_PTR e), (a, b, c, d, e))
WRAP(C_CloseSession, (SH a), (a))
WRAP(C_CloseAllSessions, (CK_SLOT_ID a), (a))
WRAP_INFO(C_GetSessionInfo, (SH a, CK_SESSION_INFO_PTR b), (a, b), b)
WRAP(C_GetOperationState, (SH a, BP b, ULP c), (a, b, c))
WRAP(C_SetOperationState, (SH a, BP b, UL c, OH d, OH e), (a, b, c, d, e))
/* C_Login: besides its usual line, "C_Login@LABEL rv=…" names the token
 * the session is on (its label, blanks as '_'), so a test can count the
 * logins each token got. */
static CK_RV
w_C_Login(SH a, CK_USER_TYPE b, BP c, UL d)
{
  struct fault f;
  CK_SESSION_INFO si;
  CK_TOKEN_INFO ti;
  char label[sizeof ti.label + 1] = "?";
  CK_RV rv;

  evaluate(FN_C_Login, &f);
  rv = f.has_rv ? f.rv : real->C_Login ? real->C_Login(a, b, c, d) : CKR_FUNCTION_NOT_SUPPORTED;
  if (real->C_GetSessionInfo && real->C_GetTokenInfo && real->C_GetSessionInfo(a, &si) == CKR_OK
      && real->C_GetTokenInfo(si.slotID, &ti) == CKR_OK) {
    size_t n = sizeof ti.label;
    while (n > 0 && (ti.label[n - 1] == ' ' || ti.label[n - 1] == '\0'))
      n--;
    for (size_t i = 0; i < n; i++)
      label[i] = ti.label[i] > ' ' && ti.label[i] < 0x7f ? (char) ti.label[i] : '_';
    label[n] = '\0';
  }
  log_line("C_Login@%s rv=0x%08lx\n", label, (unsigned long) rv);
  return log_call(FN_C_Login, rv);
}
WRAP(C_Logout, (SH a), (a))
WRAP(C_CreateObject, (SH a, AP b, UL c, CK_OBJECT_HANDLE_PTR d), (a, b, c, d))
WRAP(C_CopyObject, (SH a, OH b, AP c, UL d, CK_OBJECT_HANDLE_PTR e), (a, b, c, d, e))
WRAP(C_DestroyObject, (SH a, OH b), (a, b))
WRAP(C_GetObjectSize, (SH a, OH b, ULP c), (a, b, c))
WRAP(C_SetAttributeValue, (SH a, OH b, AP c, UL d), (a, b, c, d))
WRAP(C_FindObjectsInit, (SH a, AP b, UL c), (a, b, c))
WRAP(C_FindObjectsFinal, (SH a), (a))
WRAP(C_EncryptInit, (SH a, MP b, OH c), (a, b, c))
WRAP(C_Encrypt, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_EncryptUpdate, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_EncryptFinal, (SH a, BP b, ULP c), (a, b, c))
WRAP(C_DecryptInit, (SH a, MP b, OH c), (a, b, c))
WRAP(C_Decrypt, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_DecryptUpdate, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_DecryptFinal, (SH a, BP b, ULP c), (a, b, c))
WRAP(C_DigestInit, (SH a, MP b), (a, b))
WRAP(C_Digest, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_DigestUpdate, (SH a, BP b, UL c), (a, b, c))
WRAP(C_DigestKey, (SH a, OH b), (a, b))
WRAP(C_DigestFinal, (SH a, BP b, ULP c), (a, b, c))
WRAP(C_SignInit, (SH a, MP b, OH c), (a, b, c))
WRAP(C_SignUpdate, (SH a, BP b, UL c), (a, b, c))
WRAP(C_SignFinal, (SH a, BP b, ULP c), (a, b, c))
WRAP(C_SignRecoverInit, (SH a, MP b, OH c), (a, b, c))
WRAP(C_SignRecover, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_VerifyInit, (SH a, MP b, OH c), (a, b, c))
WRAP(C_Verify, (SH a, BP b, UL c, BP d, UL e), (a, b, c, d, e))
WRAP(C_VerifyUpdate, (SH a, BP b, UL c), (a, b, c))
WRAP(C_VerifyFinal, (SH a, BP b, UL c), (a, b, c))
WRAP(C_VerifyRecoverInit, (SH a, MP b, OH c), (a, b, c))
WRAP(C_VerifyRecover, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_DigestEncryptUpdate, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_DecryptDigestUpdate, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_SignEncryptUpdate, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_DecryptVerifyUpdate, (SH a, BP b, UL c, BP d, ULP e), (a, b, c, d, e))
WRAP(C_GenerateKey, (SH a, MP b, AP c, UL d, CK_OBJECT_HANDLE_PTR e), (a, b, c, d, e))
WRAP(C_WrapKey, (SH a, MP b, OH c, OH d, BP e, ULP f_), (a, b, c, d, e, f_))
WRAP(C_UnwrapKey, (SH a, MP b, OH c, BP d, UL e, AP f_, UL g, CK_OBJECT_HANDLE_PTR h), (a, b, c, d, e, f_, g, h))
WRAP(C_DeriveKey, (SH a, MP b, OH c, AP d, UL e, CK_OBJECT_HANDLE_PTR f_), (a, b, c, d, e, f_))
WRAP(C_SeedRandom, (SH a, BP b, UL c), (a, b, c))
WRAP(C_GenerateRandom, (SH a, BP b, UL c), (a, b, c))
WRAP(C_GetFunctionStatus, (SH a), (a))
WRAP(C_CancelFunction, (SH a), (a))
WRAP(C_WaitForSlotEvent, (CK_FLAGS a, CK_SLOT_ID_PTR b, CK_VOID_PTR c), (a, b, c))

/* A hostile module's lengths and counts: the real call fills the caller's
 * buffer as usual, then the reported size is made larger than that buffer
 * (grow=N: N more bytes than were written; overcount=N: N more entries than
 * the caller had room for).  Only calls that were given a buffer. */

/* C_GetAttributeValue: grow=N on every attribute whose value was returned. */
static CK_RV
w_C_GetAttributeValue(SH a, OH b, AP tmpl, UL n)
{
  struct fault f;
  evaluate(FN_C_GetAttributeValue, &f);
  if (f.has_rv)
    return log_call(FN_C_GetAttributeValue, f.rv);
  CK_RV rv = real->C_GetAttributeValue ? real->C_GetAttributeValue(a, b, tmpl, n)
                                       : CKR_FUNCTION_NOT_SUPPORTED;
  if (rv == CKR_OK && f.grow && tmpl)
    for (UL i = 0; i < n; i++)
      if (tmpl[i].pValue && tmpl[i].ulValueLen != CK_UNAVAILABLE_INFORMATION)
        tmpl[i].ulValueLen += f.grow;
  return log_call(FN_C_GetAttributeValue, rv);
}

/* C_GenerateKeyPair: always_auth=1 adds CKA_ALWAYS_AUTHENTICATE=TRUE to the
 * private key's template, as a card whose keys need the PIN before every
 * signature (the real module then enforces it). */
static CK_RV
w_C_GenerateKeyPair(SH a, MP mech, AP pub, UL n_pub, AP priv, UL n_priv, CK_OBJECT_HANDLE_PTR hpub,
                    CK_OBJECT_HANDLE_PTR hpriv)
{
  struct fault f;
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE *tmpl = NULL;
  CK_RV rv;

  evaluate(FN_C_GenerateKeyPair, &f);
  if (f.has_rv)
    return log_call(FN_C_GenerateKeyPair, f.rv);
  if (!real->C_GenerateKeyPair)
    return log_call(FN_C_GenerateKeyPair, CKR_FUNCTION_NOT_SUPPORTED);
  if (f.always_auth) {
    tmpl = calloc(n_priv + 1, sizeof *tmpl);
    if (!tmpl)
      return log_call(FN_C_GenerateKeyPair, CKR_HOST_MEMORY);
    if (n_priv)
      memcpy(tmpl, priv, n_priv * sizeof *tmpl);
    tmpl[n_priv] = (CK_ATTRIBUTE) { CKA_ALWAYS_AUTHENTICATE, &yes, sizeof yes };
    priv = tmpl;
    n_priv++;
  }
  rv = real->C_GenerateKeyPair(a, mech, pub, n_pub, priv, n_priv, hpub, hpriv);
  free(tmpl);
  return log_call(FN_C_GenerateKeyPair, rv);
}

/* C_Sign: grow=N on the signature's length when a buffer was given. */
static CK_RV
w_C_Sign(SH a, BP data, UL len, BP sig, ULP sig_len)
{
  struct fault f;
  evaluate(FN_C_Sign, &f);
  if (f.has_rv)
    return log_call(FN_C_Sign, f.rv);
  CK_RV rv = real->C_Sign ? real->C_Sign(a, data, len, sig, sig_len) : CKR_FUNCTION_NOT_SUPPORTED;
  if (rv == CKR_OK && f.grow && sig && sig_len)
    *sig_len += f.grow;
  return log_call(FN_C_Sign, rv);
}

/* C_FindObjects: overcount=N reports N more handles than the room given. */
static CK_RV
w_C_FindObjects(SH a, CK_OBJECT_HANDLE_PTR found, UL room, ULP count)
{
  struct fault f;
  evaluate(FN_C_FindObjects, &f);
  if (f.has_rv)
    return log_call(FN_C_FindObjects, f.rv);
  CK_RV rv = real->C_FindObjects ? real->C_FindObjects(a, found, room, count) : CKR_FUNCTION_NOT_SUPPORTED;
  if (rv == CKR_OK && f.overcount && found && count)
    *count = room + f.overcount;
  return log_call(FN_C_FindObjects, rv);
}

/* C_GetSlotList: hide=1 makes the list empty when tokenPresent is TRUE;
 * overcount=N reports N more slots than the room given (with a list). */
static CK_RV
w_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
  struct fault f;
  evaluate(FN_C_GetSlotList, &f);
  if (f.has_rv)
    return log_call(FN_C_GetSlotList, f.rv);
  if (f.hide && present) {
    if (!count)
      return log_call(FN_C_GetSlotList, CKR_ARGUMENTS_BAD);
    *count = 0;
    return log_call(FN_C_GetSlotList, CKR_OK);
  }
  CK_ULONG room = count ? *count : 0;
  CK_RV rv = real->C_GetSlotList ? real->C_GetSlotList(present, list, count)
                                 : CKR_FUNCTION_NOT_SUPPORTED;
  if (rv == CKR_OK && f.overcount && list && count)
    *count = room + f.overcount;
  return log_call(FN_C_GetSlotList, rv);
}

static CK_RV w_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppList);

static CK_FUNCTION_LIST fault_list = {
  { 2, 40 },
#define N(name) w_##name,
  ALL_FUNCTIONS(N)
#undef N
};

static CK_RV
w_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppList)
{
  pthread_once(&load_once, load_real);
  if (!real)
    return log_call(FN_C_GetFunctionList, load_rv);
  struct fault f;
  evaluate(FN_C_GetFunctionList, &f);
  if (f.has_rv)
    return log_call(FN_C_GetFunctionList, f.rv);
  if (!ppList)
    return log_call(FN_C_GetFunctionList, CKR_ARGUMENTS_BAD);
  *ppList = &fault_list;
  return log_call(FN_C_GetFunctionList, CKR_OK);
}

/* The only exported symbol. */
__attribute__((visibility("default"))) CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppList)
{
  return w_C_GetFunctionList(ppList);
}
