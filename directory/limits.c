/*
 * The caps of every Directory method (see limits.h). Field ids and types are
 * those of common/control.thrift; a method or argument added there is added
 * here too (a method missing here is refused as unknown).
 */
#include "directory/limits.h"

#include "common/auth.h"
#include "directory/events.h"
#include "namespaces/path.h"
#include "namespaces/tree.h"

#define SCALAR(t) {.type = (t)}
#define STRING(n) {.type = MF_CT_STRING, .max = (n)}
#define LIST(n, e) {.type = MF_CT_LIST, .max = (n), .elem = (e)}
#define MAP(n, k, v) {.type = MF_CT_MAP, .max = (n), .key = (k), .elem = (v)}
#define STRUCT(f) {.type = MF_CT_STRUCT, .fields = (f)}

/* What a person types (a path, tags) is capped at DIR_TYPED_MARGIN times
 * what the handlers accept: a value a little too long still reaches its
 * handler, whose error names the rule ("path is longer than 4096 bytes"),
 * while one that can only be an attack is refused unread. The cost of such
 * a margin is a few kilobytes; what memory servers and the library compose
 * (addresses, event keys, the number of events or paths in a batch) is
 * capped at the handlers' own limits. */
#define DIR_TYPED_MARGIN 2

static const mf_compact_type_t t_bool = SCALAR(MF_CT_BOOL);
static const mf_compact_type_t t_i32 = SCALAR(MF_CT_I32);
static const mf_compact_type_t t_i64 = SCALAR(MF_CT_I64);
static const mf_compact_type_t t_path = STRING(DIR_TYPED_MARGIN * NS_PATH_MAX);
static const mf_compact_type_t t_address = STRING(DIR_ADDRESS_MAX);
static const mf_compact_type_t t_tag_key = STRING(DIR_TYPED_MARGIN * NS_TAG_KEY_MAX);
static const mf_compact_type_t t_tag_value = STRING(DIR_TYPED_MARGIN * NS_TAG_VALUE_MAX);
static const mf_compact_type_t t_tags =
    MAP(DIR_TYPED_MARGIN * NS_TAGS_MAX, &t_tag_key, &t_tag_value);
static const mf_compact_type_t t_paths = LIST(DIR_RENEW_MAX_PATHS, &t_path);
static const mf_compact_type_t t_event_key = STRING(DIR_EVENT_KEY_MAX);
static const mf_compact_type_t t_zone = STRING(DIR_ZONE_MAX);

static const mf_compact_field_t f_create_options[] = {
    {1, "blocks", &t_i32},         {2, "lease_ms", &t_i64},
    {3, "pinned", &t_bool},        {4, "tags", &t_tags},
    {5, "max_blocks", &t_i32},     {6, "high_watermark", &t_i32},
    {7, "low_watermark", &t_i32},  {8, "replicas", &t_i32},
    {0}};
static const mf_compact_type_t t_create_options = STRUCT(f_create_options);

static const mf_compact_field_t f_data_event[] = {
    {1, "block_index", &t_i32}, {2, "generation", &t_i64}, {3, "kind", &t_i32},
    {4, "key", &t_event_key},   {5, "offset", &t_i64},     {6, "length", &t_i64},
    {7, "chain_seq", &t_i64},   {0}};
static const mf_compact_type_t t_data_event = STRUCT(f_data_event);
static const mf_compact_type_t t_events = LIST(DIR_PUBLISH_MAX_EVENTS, &t_data_event);

/* Argument lists shared by several methods. */
static const mf_compact_field_t a_none[] = {{0}};
static const mf_compact_field_t a_path[] = {{1, "path", &t_path}, {0}};
/* The mutating calls end with the request id (client_id, request_seq). */
static const mf_compact_field_t a_mkdir[] = {
    {1, "path", &t_path}, {2, "parents", &t_bool}, {3, "client_id", &t_i64},
    {4, "request_seq", &t_i64}, {0}};
static const mf_compact_field_t a_remove[] = {
    {1, "path", &t_path}, {2, "recursive", &t_bool}, {3, "client_id", &t_i64},
    {4, "request_seq", &t_i64}, {0}};
static const mf_compact_field_t a_create[] = {
    {1, "path", &t_path}, {2, "kind", &t_i32}, {3, "opts", &t_create_options},
    {4, "client_id", &t_i64}, {5, "request_seq", &t_i64}, {0}};
static const mf_compact_field_t a_open_or_create[] = {
    {1, "path", &t_path}, {2, "kind", &t_i32}, {3, "opts", &t_create_options}, {0}};
static const mf_compact_field_t a_rename[] = {
    {1, "old_path", &t_path}, {2, "new_path", &t_path}, {3, "client_id", &t_i64},
    {4, "request_seq", &t_i64}, {0}};
static const mf_compact_field_t a_renew[] = {{1, "paths", &t_paths}, {0}};
static const mf_compact_field_t a_add_block[] = {
    {1, "path", &t_path},      {2, "range_lo", &t_i64},    {3, "range_hi", &t_i64},
    {4, "client_id", &t_i64}, {5, "request_seq", &t_i64}, {0}};
static const mf_compact_field_t a_remove_block[] = {
    {1, "path", &t_path}, {2, "partition", &t_i32}, {3, "client_id", &t_i64},
    {4, "request_seq", &t_i64}, {0}};
static const mf_compact_field_t a_release_range[] = {
    {1, "path", &t_path}, {2, "range_lo", &t_i64}, {0}};
static const mf_compact_field_t a_register_server[] = {
    {1, "address", &t_address}, {2, "blocks", &t_i32},
    {3, "block_size", &t_i64},  {4, "gen_floor", &t_i64},
    {5, "incarnation", &t_i64}, {6, "zone", &t_zone},
    {0}};
static const mf_compact_field_t a_check_block[] = {
    {1, "server_id", &t_i32}, {2, "block_index", &t_i32}, {0}};
static const mf_compact_field_t a_heartbeat[] = {
    {1, "server_id", &t_i32}, {2, "blocks_used", &t_i32}, {3, "incarnation", &t_i64}, {0}};
static const mf_compact_field_t a_repartition_begin[] = {
    {1, "server_id", &t_i32}, {2, "block_index", &t_i32}, {3, "generation", &t_i64},
    {4, "merge", &t_bool},    {5, "split_at", &t_i64},    {0}};
static const mf_compact_field_t a_repartition_end[] = {
    {1, "server_id", &t_i32}, {2, "op_id", &t_i64}, {3, "commit", &t_bool},
    {4, "bytes_moved", &t_i64}, {0}};
static const mf_compact_field_t a_replica_end[] = {
    {1, "server_id", &t_i32}, {2, "op_id", &t_i64}, {3, "commit", &t_bool},
    {4, "bytes", &t_i64}, {0}};
static const mf_compact_field_t a_truncate[] = {{1, "path", &t_path}, {2, "size", &t_i64}, {0}};
static const mf_compact_field_t a_watch[] = {
    {1, "path", &t_path},      {2, "mask", &t_i32},  {3, "epoch", &t_i64},
    {4, "after_seq", &t_i64},  {5, "max", &t_i32},   {6, "timeout_ms", &t_i32},
    {0}};
/* A token is what a person types: a generous cap, checked by the handler. */
static const mf_compact_type_t t_token = STRING(DIR_TOKEN_MAX);
static const mf_compact_type_t t_hex_nonce = STRING(2 * MF_NONCE_SIZE);
static const mf_compact_type_t t_hex_mac = STRING(2 * MF_MAC_SIZE);
static const mf_compact_field_t a_login[] = {{1, "token", &t_token}, {0}};
static const mf_compact_field_t a_cluster_auth[] = {
    {1, "client_nonce", &t_hex_nonce}, {2, "proof", &t_hex_mac}, {0}};
static const mf_compact_field_t a_publish[] = {
    {1, "server_id", &t_i32}, {2, "events", &t_events}, {3, "incarnation", &t_i64}, {0}};

const mf_compact_method_t dir_limits[] = {
    {"login", a_login},
    {"cluster_challenge", a_none},
    {"cluster_auth", a_cluster_auth},
    {"tenants", a_none},
    {"mkdir", a_mkdir},
    {"create_ns", a_create},
    {"open_ns", a_path},
    {"open_or_create", a_open_or_create},
    {"remove", a_remove},
    {"rename", a_rename},
    {"exists", a_path},
    {"stat", a_path},
    {"list_children", a_path},
    {"renew", a_renew},
    {"get_layout", a_path},
    {"add_block", a_add_block},
    {"remove_block", a_remove_block},
    {"release_range", a_release_range},
    {"register_server", a_register_server},
    {"check_block", a_check_block},
    {"heartbeat", a_heartbeat},
    {"servers", a_none},
    {"leases", a_path},
    {"stats", a_none},
    {"repartition_begin", a_repartition_begin},
    {"repartition_end", a_repartition_end},
    {"replica_end", a_replica_end},
    {"truncate", a_truncate},
    {"watch", a_watch},
    {"publish", a_publish},
    {"cluster", a_none},
    {NULL, NULL}};
