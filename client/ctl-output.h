#pragma once
/* p11certctl: tables, JSON, dates (ctl-output.c) */
#include <glib.h>
#include "p11c-wire.h"

G_BEGIN_DECLS

typedef struct _CtlTable CtlTable;
/* columns: header names; widths given later */
CtlTable *ctl_table_new (guint n_columns, const char *const *headers);
/* min width of column @col when shrinking; 0 = never shrink */
void ctl_table_set_shrinkable (CtlTable *t, guint col, guint min_width);
void ctl_table_add_row (CtlTable *t, ...);   /* n_columns strings */
void ctl_table_print (CtlTable *t, guint max_width);
/* 80, or the terminal's width when stdout is a wider terminal */
guint ctl_output_width (void);
void ctl_table_free (CtlTable *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (CtlTable, ctl_table_free)

/* UTF-8 aware truncation to @width characters with "…" */
char *ctl_ellipsize (const char *s, guint width);

/* JSON: any GVariant (a{sv}, aa{sv}, arrays, basic types; ay as base64) */
void ctl_json_append (GString *out, GVariant *v, int indent);
void ctl_json_append_string (GString *out, const char *s);
/* print @v as JSON to stdout (pretty, newline) */
void ctl_json_print (GVariant *v);

char *ctl_format_date (gint64 unix_time);
char *ctl_format_days_left (gint64 not_after);


/* Print subject/expiry/token/URI of a certificate entry */
void ctl_print_cert (const P11cWireCert *cert, GVariant *tokens);

G_END_DECLS
