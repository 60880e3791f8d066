/* Replay driver for gcc builds (no libFuzzer): runs LLVMFuzzerTestOneInput
 * once on every file named on the command line; a directory stands for
 * every regular file in it (not recursive).  Exit 0 when every input ran,
 * 1 when an argument could not be read.  A crash is a crash (abort, or a
 * sanitizer report in sanitizer builds), which is what the test catches.
 *
 *   fuzz-uri fuzz/corpus/uri            # replay the seeds and crash-* inputs
 *   fuzz-uri some-input another-input
 */
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv) __attribute__((weak));

static gint
compare_paths (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static gboolean
run_file (const char *path, guint *count)
{
  g_autofree char *data = NULL;
  g_autofree guint8 *copy = NULL;
  g_autoptr(GError) error = NULL;
  gsize len = 0;

  if (!g_file_get_contents (path, &data, &len, &error))
    {
      fprintf (stderr, "%s\n", error->message);
      return FALSE;
    }
  /* an exact-size heap copy, so ASan sees reads past the end as libFuzzer would */
  copy = g_malloc (len ? len : 1);
  memcpy (copy, data, len);
  fprintf (stderr, "Running: %s (%zu bytes)\n", path, len);
  LLVMFuzzerTestOneInput (copy, len);
  (*count)++;
  return TRUE;
}

int
main (int argc, char **argv)
{
  guint count = 0;
  gboolean ok = TRUE;

  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize (&argc, &argv);
  if (argc < 2)
    {
      fprintf (stderr, "usage: %s FILE|DIR...\n", argv[0]);
      return 2;
    }
  for (int i = 1; i < argc; i++)
    {
      if (g_file_test (argv[i], G_FILE_TEST_IS_DIR))
        {
          g_autoptr(GError) error = NULL;
          g_autoptr(GDir) dir = g_dir_open (argv[i], 0, &error);
          g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
          const char *name;

          if (dir == NULL)
            {
              fprintf (stderr, "%s\n", error->message);
              ok = FALSE;
              continue;
            }
          while ((name = g_dir_read_name (dir)) != NULL)
            g_ptr_array_add (names, g_build_filename (argv[i], name, NULL));
          g_ptr_array_sort (names, compare_paths);
          for (guint j = 0; j < names->len; j++)
            if (g_file_test (names->pdata[j], G_FILE_TEST_IS_REGULAR))
              ok &= run_file (names->pdata[j], &count);
        }
      else
        ok &= run_file (argv[i], &count);
    }
  fprintf (stderr, "Executed %u input(s)\n", count);
  if (count == 0)
    {
      fprintf (stderr, "No input found\n");
      return 1;
    }
  return ok ? 0 : 1;
}
