/* p11certctl: output — tables that fit the terminal, JSON for --json,
 * dates, a certificate's summary. */
#define G_LOG_DOMAIN "p11certctl"
#include "ctl-common.h"
#include "p11c-error.h"
#include "p11c-i18n.h"
#include "p11c-names.h"
#include "p11c-secret.h"
#include "p11c-uri.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

/* ---- tables -------------------------------------------------------------- */

struct _CtlTable {
  guint      n;
  char     **headers;
  guint     *min;      /* 0 = not shrinkable */
  GPtrArray *rows;     /* char** */
};

CtlTable *
ctl_table_new (guint n_columns, const char *const *headers)
{
  CtlTable *t = g_new0 (CtlTable, 1);
  t->n = n_columns;
  t->headers = g_new0 (char *, n_columns + 1);
  for (guint i = 0; i < n_columns; i++)
    t->headers[i] = g_strdup (_(headers[i]));   /* N_() in the callers */
  t->min = g_new0 (guint, n_columns);
  t->rows = g_ptr_array_new_with_free_func ((GDestroyNotify) g_strfreev);
  return t;
}

void
ctl_table_set_shrinkable (CtlTable *t, guint col, guint min_width)
{
  g_return_if_fail (col < t->n);
  t->min[col] = min_width;
}

void
ctl_table_add_row (CtlTable *t, ...)
{
  va_list ap;
  char **row = g_new0 (char *, t->n + 1);
  va_start (ap, t);
  for (guint i = 0; i < t->n; i++)
    {
      const char *s = va_arg (ap, const char *);
      g_autofree char *clean = g_strdup (s ? s : "");
      /* no control characters in a table cell */
      for (char *p = clean; *p; p++)
        if ((guchar) *p < 0x20 || *p == 0x7f)
          *p = ' ';
      row[i] = g_utf8_make_valid (clean, -1);
    }
  va_end (ap);
  g_ptr_array_add (t->rows, row);
}

char *
ctl_ellipsize (const char *s, guint width)
{
  glong len = g_utf8_strlen (s, -1);
  const char *end;
  GString *out;

  if (len <= (glong) width)
    return g_strdup (s);
  if (width == 0)
    return g_strdup ("");
  end = g_utf8_offset_to_pointer (s, width - 1);
  out = g_string_new_len (s, end - s);
  g_string_append (out, "…");
  return g_string_free (out, FALSE);
}

void
ctl_table_print (CtlTable *t, guint max_width)
{
  g_autofree guint *w = g_new0 (guint, t->n);
  guint total;
  g_autoptr(GString) line = g_string_new (NULL);

  for (guint i = 0; i < t->n; i++)
    {
      w[i] = g_utf8_strlen (t->headers[i], -1);
      for (guint r = 0; r < t->rows->len; r++)
        w[i] = MAX (w[i], (guint) g_utf8_strlen (((char **) t->rows->pdata[r])[i], -1));
    }
  for (;;)
    {
      guint best = G_MAXUINT, best_slack = 0;
      total = 0;
      for (guint i = 0; i < t->n; i++)
        total += w[i] + (i + 1 < t->n ? 2 : 0);
      if (total <= max_width)
        break;
      for (guint i = 0; i < t->n; i++)
        if (t->min[i] > 0 && w[i] > t->min[i] && w[i] - t->min[i] > best_slack)
          {
            best = i;
            best_slack = w[i] - t->min[i];
          }
      if (best == G_MAXUINT)
        break;
      w[best]--;
    }
  for (guint r = 0; r <= t->rows->len; r++)
    {
      char **cells = r == 0 ? t->headers : t->rows->pdata[r - 1];
      g_string_truncate (line, 0);
      for (guint i = 0; i < t->n; i++)
        {
          g_autofree char *cell = ctl_ellipsize (cells[i], w[i]);
          g_string_append (line, cell);
          if (i + 1 < t->n)
            for (guint pad = g_utf8_strlen (cell, -1); pad < w[i] + 2; pad++)
              g_string_append_c (line, ' ');
        }
      while (line->len > 0 && line->str[line->len - 1] == ' ')
        g_string_truncate (line, line->len - 1);
      puts (line->str);
    }
  fflush (stdout);
}

guint
ctl_output_width (void)
{
  struct winsize ws;
  if (isatty (STDOUT_FILENO) && ioctl (STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 80)
    return ws.ws_col;
  return 80;
}

void
ctl_table_free (CtlTable *t)
{
  if (t == NULL)
    return;
  g_strfreev (t->headers);
  g_free (t->min);
  g_ptr_array_unref (t->rows);
  g_free (t);
}

/* ---- JSON ---------------------------------------------------------------- */

void
ctl_json_append_string (GString *out, const char *s)
{
  g_string_append_c (out, '"');
  for (const guchar *p = (const guchar *) s; *p; p++)
    {
      switch (*p)
        {
        case '"':  g_string_append (out, "\\\""); break;
        case '\\': g_string_append (out, "\\\\"); break;
        case '\b': g_string_append (out, "\\b"); break;
        case '\f': g_string_append (out, "\\f"); break;
        case '\n': g_string_append (out, "\\n"); break;
        case '\r': g_string_append (out, "\\r"); break;
        case '\t': g_string_append (out, "\\t"); break;
        default:
          if (*p < 0x20 || *p == 0x7f)
            g_string_append_printf (out, "\\u%04x", *p);
          else
            g_string_append_c (out, (char) *p);
        }
    }
  g_string_append_c (out, '"');
}

static void
newline (GString *out, int indent)
{
  if (indent < 0)
    return;
  g_string_append_c (out, '\n');
  for (int i = 0; i < indent; i++)
    g_string_append (out, "  ");
}

void
ctl_json_append (GString *out, GVariant *v, int indent)
{
  const GVariantType *type = g_variant_get_type (v);
  int inner = indent < 0 ? -1 : indent + 1;

  if (g_variant_is_of_type (v, G_VARIANT_TYPE_VARIANT))
    {
      g_autoptr(GVariant) child = g_variant_get_variant (v);
      ctl_json_append (out, child, indent);
      return;
    }
  if (g_variant_type_is_maybe (type))
    {
      g_autoptr(GVariant) child = g_variant_get_maybe (v);
      if (child == NULL)
        g_string_append (out, "null");
      else
        ctl_json_append (out, child, indent);
      return;
    }
  if (g_variant_is_of_type (v, G_VARIANT_TYPE_BYTESTRING))
    {
      gsize len;
      const guint8 *data = g_variant_get_fixed_array (v, &len, 1);
      g_autofree char *b64 = g_base64_encode (data, len);
      ctl_json_append_string (out, b64);
      return;
    }
  if (g_variant_type_is_array (type)
      && g_variant_type_is_dict_entry (g_variant_type_element (type))
      && g_variant_type_equal (g_variant_type_key (g_variant_type_element (type)), G_VARIANT_TYPE_STRING))
    {
      gsize n = g_variant_n_children (v);
      g_string_append_c (out, '{');
      for (gsize i = 0; i < n; i++)
        {
          g_autoptr(GVariant) entry = g_variant_get_child_value (v, i);
          g_autoptr(GVariant) key = g_variant_get_child_value (entry, 0);
          g_autoptr(GVariant) value = g_variant_get_child_value (entry, 1);
          newline (out, inner);
          ctl_json_append_string (out, g_variant_get_string (key, NULL));
          g_string_append (out, indent < 0 ? ":" : ": ");
          ctl_json_append (out, value, inner);
          if (i + 1 < n)
            g_string_append_c (out, ',');
        }
      if (n > 0)
        newline (out, indent);
      g_string_append_c (out, '}');
      return;
    }
  if (g_variant_type_is_array (type) || g_variant_type_is_tuple (type) || g_variant_type_is_dict_entry (type))
    {
      gsize n = g_variant_n_children (v);
      g_string_append_c (out, '[');
      for (gsize i = 0; i < n; i++)
        {
          g_autoptr(GVariant) child = g_variant_get_child_value (v, i);
          newline (out, inner);
          ctl_json_append (out, child, inner);
          if (i + 1 < n)
            g_string_append_c (out, ',');
        }
      if (n > 0)
        newline (out, indent);
      g_string_append_c (out, ']');
      return;
    }
  switch (g_variant_classify (v))
    {
    case G_VARIANT_CLASS_BOOLEAN:
      g_string_append (out, g_variant_get_boolean (v) ? "true" : "false");
      break;
    case G_VARIANT_CLASS_BYTE:
      g_string_append_printf (out, "%u", g_variant_get_byte (v));
      break;
    case G_VARIANT_CLASS_INT16:
      g_string_append_printf (out, "%d", g_variant_get_int16 (v));
      break;
    case G_VARIANT_CLASS_UINT16:
      g_string_append_printf (out, "%u", g_variant_get_uint16 (v));
      break;
    case G_VARIANT_CLASS_INT32:
      g_string_append_printf (out, "%" G_GINT32_FORMAT, g_variant_get_int32 (v));
      break;
    case G_VARIANT_CLASS_UINT32:
      g_string_append_printf (out, "%" G_GUINT32_FORMAT, g_variant_get_uint32 (v));
      break;
    case G_VARIANT_CLASS_INT64:
      g_string_append_printf (out, "%" G_GINT64_FORMAT, g_variant_get_int64 (v));
      break;
    case G_VARIANT_CLASS_UINT64:
      g_string_append_printf (out, "%" G_GUINT64_FORMAT, g_variant_get_uint64 (v));
      break;
    case G_VARIANT_CLASS_HANDLE:
      g_string_append_printf (out, "%" G_GINT32_FORMAT, g_variant_get_handle (v));
      break;
    case G_VARIANT_CLASS_DOUBLE:
      {
        double d = g_variant_get_double (v);
        char buf[G_ASCII_DTOSTR_BUF_SIZE];
        if (d != d || d > G_MAXDOUBLE || d < -G_MAXDOUBLE)
          g_string_append (out, "null");
        else
          {
            /* the shortest form that reads back the same (0.1, not 0.10000000000000001) */
            g_ascii_formatd (buf, sizeof buf, "%.15g", d);
            if (g_ascii_strtod (buf, NULL) != d)
              g_ascii_formatd (buf, sizeof buf, "%.17g", d);
            g_string_append (out, buf);
          }
        break;
      }
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
      ctl_json_append_string (out, g_variant_get_string (v, NULL));
      break;
    default:
      g_string_append (out, "null");
    }
}

void
ctl_json_print (GVariant *v)
{
  g_autoptr(GString) out = g_string_new (NULL);
  ctl_json_append (out, v, 0);
  g_string_append_c (out, '\n');
  fputs (out->str, stdout);
  fflush (stdout);
}

/* ---- formatting ---------------------------------------------------------- */

char *
ctl_format_date (gint64 t)
{
  g_autoptr(GDateTime) dt = g_date_time_new_from_unix_local (t);
  if (dt == NULL)
    return g_strdup ("?");
  /* TRANSLATORS: a date as your users write it (g_date_time_format), e.g. "%d.%m.%Y" */
  return g_date_time_format (dt, _("%Y-%m-%d"));
}

char *
ctl_format_days_left (gint64 not_after)
{
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  gint64 days;

  if (not_after <= now)
    return g_strdup (_("EXPIRED"));
  days = (not_after - now) / 86400;
  if (days == 0)
    return g_strdup (_("in less than a day"));
  return g_strdup_printf (ngettext ("in %d day", "in %d days", (unsigned long) MIN (days, G_MAXINT)),
                          (int) MIN (days, G_MAXINT));
}

static void
print_field (const char *const *labels, const char *label, const char *value)
{
  glong width = 0;
  for (guint i = 0; labels[i]; i++)
    width = MAX (width, g_utf8_strlen (labels[i], -1));
  printf ("  %s", label);
  for (glong pad = g_utf8_strlen (label, -1); pad < width + 2; pad++)
    putchar (' ');
  printf ("%s\n", value);
}

void
ctl_print_cert (const P11cWireCert *cert, GVariant *tokens)
{
  const char *err = cert->error;
  g_auto(P11cWireToken) token = { 0 };
  const char *labels[] = { _("Subject:"), _("Issuer:"), _("Expires:"), _("Storage:"), _("Token:"), _("Label:"),
                           _("URI:"), NULL };

  ctl_token_by_path (tokens, cert->token, &token);
  if (err != NULL)
    {
      /* TRANSLATORS: %s is the daemon's English reason, for an administrator */
      g_autofree char *text = g_strdup_printf (_("(unreadable: %s)"), err);
      print_field (labels, labels[0], text);
    }
  else
    {
      gint64 not_after = cert->not_after;
      g_autofree char *date = ctl_format_date (not_after);
      g_autofree char *left = ctl_format_days_left (not_after);
      g_autofree char *expires = g_strdup_printf ("%s (%s)", date, left);
      print_field (labels, labels[0], cert->subject ? cert->subject : "");
      print_field (labels, labels[1], cert->issuer ? cert->issuer : "");
      print_field (labels, labels[2], expires);
    }
  if (g_strcmp0 (cert->storage, "system") == 0)
    print_field (labels, labels[3], _("system store"));
  else
    print_field (labels, labels[4], token.label ? token.label : cert->token);
  if (cert->label != NULL && cert->label[0] != '\0')
    print_field (labels, labels[5], cert->label);
  print_field (labels, labels[6], cert->uri);
  fflush (stdout);
}
