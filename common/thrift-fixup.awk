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

# Reading a map<string, string>, the generated code returns on a failed
# value read without freeing the key it has just read (a leak on every
# malformed map, found by the fuzz replay). Free the key on that path.
/gchar \* key[0-9]+ = NULL;/ {
  mapkey = $3
}
/thrift_protocol_read_string \(protocol, &val[0-9]+, error\)\) < 0\)/ && mapkey != "" {
  print
  getline
  if ($0 ~ /^ *return -1;$/) {
    print "              { g_free (" mapkey "); return -1; }"
    next
  }
}

{ print }
