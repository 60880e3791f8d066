/* p11certd — every bus name, object path, interface, polkit action id and
 * environment variable, in one place. */
#pragma once

#define P11C_DBUS_NAME            "org.p11certd"
#define P11C_DBUS_PATH            "/org/p11certd"
#define P11C_DBUS_TOKENS_PATH     "/org/p11certd/tokens"
#define P11C_DBUS_JOBS_PATH       "/org/p11certd/jobs"
#define P11C_DBUS_MANAGER_IFACE   "org.p11certd1.Manager"
#define P11C_DBUS_TOKEN_IFACE     "org.p11certd1.Token"
#define P11C_DBUS_JOB_IFACE       "org.p11certd1.Job"
#define P11C_DBUS_ERROR_PREFIX    "org.p11certd.Error."

#define P11C_API_VERSION          1u

/* polkit actions */
#define P11C_ACTION_LIST          "org.p11certd.list"
#define P11C_ACTION_DELETE        "org.p11certd.token.delete"
#define P11C_ACTION_ENROLL        "org.p11certd.token.enroll"
#define P11C_ACTION_CHANGE_PIN    "org.p11certd.token.change-pin"
#define P11C_ACTION_SYSTEM        "org.p11certd.system.manage"
#define P11C_ACTION_LOCAL_CA      "org.p11certd.local-ca.issue"
#define P11C_ACTION_RENEW         "org.p11certd.renew"
#define P11C_ACTION_RENEW_SYSTEM  "org.p11certd.renew.system"  /* RenewDue: due system-store entries */
#define P11C_ACTION_CANCEL_OTHER  "org.p11certd.job.cancel-other"

/* environment variables (documented in docs/environment.md) */
#define P11C_ENV_CONFIG           "P11CERTD_CONFIG"      /* daemon config file */
#define P11C_ENV_STATE_DIR        "P11CERTD_STATE_DIR"   /* state directory */
#define P11C_ENV_BUS_ADDRESS      "P11CERTD_BUS_ADDRESS" /* client: bus to use */
#define P11C_ENV_DEBUG_HOOKS      "P11CERTD_TEST_HOOKS"  /* test-only hooks */
#define P11C_ENV_LOCALEDIR        "P11CERTD_LOCALEDIR"   /* clients: message catalogues */

#define P11C_DEFAULT_CONFIG_DIR   "/etc/p11certd"
#define P11C_DEFAULT_CONFIG       P11C_DEFAULT_CONFIG_DIR "/p11certd.conf"
#define P11C_DEFAULT_STATE_DIR    "/var/lib/p11certd"
#define P11C_DEFAULT_MODULE       "p11-kit-proxy.so"

/* secrets larger than this are refused before touching anything */
#define P11C_SECRET_MAX           256

/* journal MESSAGE_IDs (stable, for journalctl MESSAGE_ID=...) */
#define P11C_MSGID_ENROLLED       "4f0d3c6b1a2e4d7e9b51c0a8e2f1d301"
#define P11C_MSGID_DELETED        "4f0d3c6b1a2e4d7e9b51c0a8e2f1d302"
#define P11C_MSGID_RENEWED        "4f0d3c6b1a2e4d7e9b51c0a8e2f1d303"
#define P11C_MSGID_FAILED         "4f0d3c6b1a2e4d7e9b51c0a8e2f1d304"
#define P11C_MSGID_NEEDS_PERSON   "4f0d3c6b1a2e4d7e9b51c0a8e2f1d305"
#define P11C_MSGID_PIN_CHANGED    "4f0d3c6b1a2e4d7e9b51c0a8e2f1d306"
#define P11C_MSGID_RECOVERED      "4f0d3c6b1a2e4d7e9b51c0a8e2f1d307"
