/* Shared bits of the p11certd fuzz targets (fuzz/fuzz-*.c). */
#pragma once
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

/* A GLib critical is a precondition the project code broke on this input:
 * make it an abort(), which libFuzzer reports with the input saved (a
 * G_DEBUG=fatal-criticals trap is a SIGTRAP it does not catch).  Other
 * log messages are dropped to keep the fuzzer fast and its output short. */
static inline GLogWriterOutput
p11c_fuzz_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields,
                      gpointer user_data)
{
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
    {
      g_log_writer_standard_streams (level, fields, n_fields, user_data);
      abort ();
    }
  return G_LOG_WRITER_HANDLED;
}

#define P11C_FUZZ_INITIALIZE                                       \
  int LLVMFuzzerInitialize (int *argc, char ***argv)               \
  {                                                                \
    (void) argc; (void) argv;                                      \
    g_log_set_writer_func (p11c_fuzz_log_writer, NULL, NULL);      \
    return 0;                                                      \
  }

/* The input as a NUL-terminated heap string (embedded NULs stay). */
static inline char *
p11c_fuzz_strndup (const uint8_t *data, size_t size)
{
  char *s = g_malloc (size + 1);
  if (size)
    memcpy (s, data, size);
  s[size] = '\0';
  return s;
}

/* An invariant the project code promises is broken on this input. */
#define P11C_FUZZ_ASSERT(cond)                                          \
  do {                                                                  \
    if (!(cond))                                                        \
      {                                                                 \
        fprintf (stderr, "%s:%d: fuzz invariant failed: %s\n",          \
                 __FILE__, __LINE__, #cond);                            \
        abort ();                                                       \
      }                                                                 \
  } while (0)
