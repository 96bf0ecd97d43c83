# Post-processes Thrift c_glib 0.17 generated code: the generated finalize
# functions of structs do not chain up to their parent class, so every
# object leaks its ThriftStruct part (THRIFT_C_GLIB.md, defect 4). This adds
# the chain-up as the last statement of each such finalize function.
/^[a-z_0-9]+_finalize \(GObject \*object\)$/ {
  fn = $1
  sub(/_finalize$/, "", fn)
  infn = 1
}
infn && /^}$/ {
  print "  G_OBJECT_CLASS (g_type_class_peek_parent (g_type_class_peek (" fn "_get_type ())))->finalize (object);"
  infn = 0
}
{ print }
