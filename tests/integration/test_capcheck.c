/*
 * Integration test of the memory server's capability check (issue 11): a
 * real directory and memory server started with the same
 * --cluster-key-file, attacked over a raw data-plane socket.
 *
 * The test writes the key file itself, so it can sign capabilities as the
 * directory does (common/auth.h): good ones (server id, block index and
 * generation from the namespace's layout, read over the control API), and
 * expired, read-only, misdirected ones; forged ones are signed with another
 * key or are random bytes. Each namespace (a file, a queue, a kv) first gets
 * data with a good capability; then every opcode is sent with no
 * capability, a forged, an expired and a misdirected one (and a read-only
 * one for writes), and each is refused with MAYFLY_EPERM on a connection
 * that stays open; reading everything back with a good capability shows
 * nothing changed. BLOCK_STAT over every block and many generations without
 * a capability answers EPERM every time (nothing to enumerate). Forged
 * KV_MIGRATE and KV_MIGRATE_ABORT frames - no capability area, a client's
 * capability, a migrate capability without its frame MAC, with a wrong MAC,
 * for other slots, for another block, under another key - change nothing:
 * the block keeps its keys and its slot range, and puts all over its slots
 * still work. A genuine migrate frame (empty, inside the block's range)
 * shows the frames are built right. Last, with two memory servers, a kv
 * namespace filled past its watermark splits and, emptied, merges back:
 * the servers' own KV_MIGRATE frames (the directory's migrate capability
 * and the frame MAC) and BLOCK_STAT requests (a capability the server signs)
 * are accepted, and every key reads back from wherever it went.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "common/auth.h"
#include "common/error.h"
#include "common/wire.h"
#include "harness.h"
#include "mf_test.h"

typedef struct {
  mf_daemon_t *d, *ms;
  mayfly_client_t *c;
  char *tmp, *key_path;
  uint8_t key[MF_KEY_SIZE];
  int fd;          /* one data-plane connection, kept for every request */
  uint64_t next_id;
  mayfly_partition_t file, queue, kv; /* copies (server_address not owned) */
} env_t;

static const uint8_t OTHER_KEY[MF_KEY_SIZE] = {0xde, 0xad, 0xbe, 0xef};

static int64_t wall_ms(void) {
  return g_get_real_time() / 1000;
}

/* --- the raw socket --- */

/* A request: header fields, the capability area, the payload. */
typedef struct {
  uint8_t op;
  const mayfly_partition_t *part; /* block and generation; NULL: 0, 0 */
  uint32_t block;                 /* used when part is NULL */
  uint64_t gen;
  uint64_t arg0, arg1;
  uint32_t arg2;
  const uint8_t *area; /* cap_len bytes */
  uint16_t cap_len;
  const void *payload;
  uint32_t plen;
  /* Migration frames: append a frame MAC under this key (NULL: none). */
  const uint8_t *mac_key;
  int bad_mac; /* append 32 random bytes instead */
} req_t;

/* Sends r on the kept connection and waits for its reply: returns the
 * reply's status (payload into *out when not NULL, g_free), or 1 when no
 * reply came. */
static int call_on(env_t *e, int fd, const req_t *r, wire_hdr_t *rep, uint8_t **out) {
  wire_hdr_t h = {.opcode = r->op,
                  .request_id = ++e->next_id,
                  .block_index = r->part ? (uint32_t)r->part->block_index : r->block,
                  .generation = r->part ? (uint64_t)r->part->generation : r->gen,
                  .arg0 = r->arg0,
                  .arg1 = r->arg1,
                  .arg2 = r->arg2,
                  .payload_len = r->plen};
  if (r->part && r->gen != 0) h.generation = r->gen; /* a generation that lies */
  uint8_t area[MF_FRAME_AUTH_SIZE + 8];
  size_t n = r->cap_len;
  if (n > 0) memcpy(area, r->area, n);
  int mac = r->mac_key != NULL || r->bad_mac;
  h.cap_len = (uint16_t)(n + (mac ? MF_MAC_SIZE : 0));
  uint8_t hdr[WIRE_HEADER_SIZE];
  wire_encode(&h, hdr);
  if (r->mac_key != NULL) {
    mf_frame_mac(r->mac_key, hdr, area, n, r->payload, r->plen, area + n);
  } else if (r->bad_mac) {
    mf_auth_random(area + n, MF_MAC_SIZE);
  }
  /* One send per frame (pieces sent apart would wait on Nagle and the
   * server's delayed acknowledgement). */
  GByteArray *frame = g_byte_array_new();
  g_byte_array_append(frame, hdr, sizeof hdr);
  g_byte_array_append(frame, area, h.cap_len);
  if (r->plen > 0) g_byte_array_append(frame, r->payload, r->plen);
  int sent = mf_send_all(fd, frame->data, frame->len);
  g_byte_array_free(frame, TRUE);
  if (sent != 0) return 1;
  uint8_t rh[WIRE_HEADER_SIZE];
  if (mf_recv_all(fd, rh, sizeof rh) != 0) return 1;
  size_t flen = 0;
  wire_hdr_t tmp;
  if (rep == NULL) rep = &tmp;
  int rc = wire_parse(rh, sizeof rh, UINT32_MAX, rep, &flen);
  if (rc != 0 && rc != MAYFLY_EAGAIN) return 1;
  uint8_t *p = g_malloc(rep->payload_len + 1);
  if (rep->payload_len > 0 && mf_recv_all(fd, p, rep->payload_len) != 0) {
    g_free(p);
    return 1;
  }
  if (rep->request_id != h.request_id || !(rep->flags & WIRE_F_REPLY)) {
    g_free(p);
    return 1;
  }
  if (out != NULL) {
    *out = p;
  } else {
    g_free(p);
  }
  return rep->status;
}

static int call(env_t *e, const req_t *r, wire_hdr_t *rep, uint8_t **out) {
  return call_on(e, e->fd, r, rep, out);
}

/* --- capabilities, signed here with the test's key --- */

typedef struct {
  uint8_t bytes[MF_CAP_SIZE];
} cap_t;

static cap_t sign(const uint8_t *key, uint8_t rights, uint32_t server, uint32_t block,
                  uint64_t gen, int64_t expiry_ms, uint64_t lo, uint64_t hi) {
  mf_cap_t c = {.rights = rights,
                .server_id = server,
                .block_index = block,
                .generation = gen,
                .expiry_ms = expiry_ms,
                .lo = lo,
                .hi = hi,
                .op_id = lo || hi ? 1 : 0};
  cap_t out;
  mf_cap_sign(key, &c, out.bytes);
  return out;
}

/* A good read-write capability for a partition, for ten minutes. */
static cap_t good(const env_t *e, const mayfly_partition_t *p) {
  return sign(e->key, MF_RIGHT_READ | MF_RIGHT_WRITE, (uint32_t)p->server_id,
              (uint32_t)p->block_index, (uint64_t)p->generation, wall_ms() + 600000, 0, 0);
}

/* --- set-up --- */

static int write_key_file(env_t *e) {
  mf_auth_random(e->key, sizeof e->key);
  char hex[2 * MF_KEY_SIZE + 1];
  mf_hex_encode(e->key, sizeof e->key, hex);
  e->key_path = g_build_filename(e->tmp, "cluster.key", NULL);
  int fd = open(e->key_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return -1;
  int ok = write(fd, hex, strlen(hex)) == (ssize_t)strlen(hex) && write(fd, "\n", 1) == 1;
  close(fd);
  return ok ? 0 : -1;
}

static int copy_part(env_t *e, const char *path, mayfly_kind_t kind, mayfly_partition_t *out) {
  mayfly_stat_t *st = NULL;
  int rc = mayfly_create(e->c, path, kind, NULL, &st);
  if (rc == 0 && (st == NULL || st->npartitions < 1)) rc = MAYFLY_EIO;
  if (rc == 0) {
    *out = st->partitions[0];
    out->server_address = NULL;
  }
  mayfly_stat_free(st);
  return rc;
}

static int env_start(env_t *e) {
  memset(e, 0, sizeof *e);
  e->fd = -1;
  e->tmp = g_dir_make_tmp("mayfly-capcheck-XXXXXX", NULL);
  if (e->tmp == NULL || write_key_file(e) != 0) return -1;
  e->d = mf_start_directory("--cluster-key-file", e->key_path, NULL);
  if (e->d == NULL) return -1;
  e->ms = mf_start_memserver(e->d, 8, "1MiB", "--cluster-key-file", e->key_path, NULL);
  if (e->ms == NULL) return -1;
  if (mayfly_connect(e->d->address, NULL, &e->c) != 0) return -1;
  if (copy_part(e, "/cap/file", MAYFLY_KIND_FILE, &e->file) != 0 ||
      copy_part(e, "/cap/queue", MAYFLY_KIND_QUEUE, &e->queue) != 0 ||
      copy_part(e, "/cap/kv", MAYFLY_KIND_KV, &e->kv) != 0) {
    return -1;
  }
  e->fd = mf_raw_connect(e->ms->port, 5);
  return e->fd >= 0 ? 0 : -1;
}

static void env_stop(env_t *e) {
  if (e->fd >= 0) close(e->fd);
  if (e->c != NULL) mayfly_disconnect(e->c);
  if (e->ms != NULL) MF_ASSERT_EQ(mf_stop(e->ms), 0);
  if (e->d != NULL) MF_ASSERT_EQ(mf_stop(e->d), 0);
  if (e->key_path != NULL) g_unlink(e->key_path);
  if (e->tmp != NULL) g_rmdir(e->tmp);
  g_free(e->key_path);
  g_free(e->tmp);
  mf_auth_wipe(e->key, sizeof e->key);
}

/* --- the data, and reading it back --- */

static const char FILE_DATA[] = "file bytes that must survive";
static const char ITEM[] = "the only queue item";
static const char KEY1[] = "key-1";
static const char VAL1[] = "value-1";

/* A kv request's payload: key (then value). */
static req_t kv_req(const env_t *e, uint8_t op, const char *key, const char *val, uint8_t *buf) {
  size_t kl = strlen(key), vl = val ? strlen(val) : 0;
  memcpy(buf, key, kl);
  if (vl > 0) memcpy(buf + kl, val, vl);
  req_t r = {.op = op,
             .part = &e->kv,
             .arg1 = wire_kv_slot(key, kl),
             .arg2 = op == WIRE_OP_KV_PUT ? (uint32_t)kl : 0,
             .payload = buf,
             .plen = (uint32_t)(kl + vl)};
  return r;
}

static req_t with_cap(req_t r, const cap_t *c) {
  r.area = c->bytes;
  r.cap_len = MF_CAP_SIZE;
  return r;
}

static int put_data(env_t *e) {
  cap_t f = good(e, &e->file), q = good(e, &e->queue), k = good(e, &e->kv);
  req_t w = {.op = WIRE_OP_FILE_WRITE, .part = &e->file, .payload = FILE_DATA,
             .plen = sizeof FILE_DATA - 1};
  req_t push = {.op = WIRE_OP_Q_PUSH, .part = &e->queue, .payload = ITEM, .plen = sizeof ITEM - 1};
  uint8_t buf[64];
  req_t put = kv_req(e, WIRE_OP_KV_PUT, KEY1, VAL1, buf);
  int rc = call(e, (req_t[]){with_cap(w, &f)}, NULL, NULL);
  if (rc == 0) rc = call(e, (req_t[]){with_cap(push, &q)}, NULL, NULL);
  if (rc == 0) rc = call(e, (req_t[]){with_cap(put, &k)}, NULL, NULL);
  return rc;
}

/* What a good capability reads of the three blocks. */
typedef struct {
  char file[64];
  uint64_t file_size, q_len, kv_keys, used[3];
  char head[64], value[64];
} state_t;

static int read_state(env_t *e, state_t *s) {
  memset(s, 0, sizeof *s);
  cap_t f = good(e, &e->file), q = good(e, &e->queue), k = good(e, &e->kv);
  wire_hdr_t rep;
  uint8_t *p = NULL;
  req_t rd = {.op = WIRE_OP_FILE_READ, .part = &e->file, .arg0 = 0, .arg1 = 63};
  if (call(e, (req_t[]){with_cap(rd, &f)}, &rep, &p) != 0) return -1;
  memcpy(s->file, p, rep.payload_len < 63 ? rep.payload_len : 63);
  g_free(p);
  req_t size = {.op = WIRE_OP_FILE_SIZE, .part = &e->file};
  if (call(e, (req_t[]){with_cap(size, &f)}, &rep, NULL) != 0) return -1;
  s->file_size = rep.arg0;
  req_t len = {.op = WIRE_OP_Q_LEN, .part = &e->queue};
  if (call(e, (req_t[]){with_cap(len, &q)}, &rep, NULL) != 0) return -1;
  s->q_len = rep.arg0;
  req_t peek = {.op = WIRE_OP_Q_PEEK, .part = &e->queue};
  int rc = call(e, (req_t[]){with_cap(peek, &q)}, &rep, &p);
  if (rc == 0) memcpy(s->head, p, rep.payload_len < 63 ? rep.payload_len : 63);
  if (rc == 0 || rc == MAYFLY_EAGAIN) g_free(p);
  uint8_t buf[64];
  req_t get = kv_req(e, WIRE_OP_KV_GET, KEY1, NULL, buf);
  rc = call(e, (req_t[]){with_cap(get, &k)}, &rep, &p);
  if (rc == 0) memcpy(s->value, p, rep.payload_len < 63 ? rep.payload_len : 63);
  if (rc == 0 || rc == MAYFLY_ENOKEY) g_free(p);
  const mayfly_partition_t *parts[3] = {&e->file, &e->queue, &e->kv};
  const cap_t caps[3] = {f, q, k};
  for (int i = 0; i < 3; i++) {
    req_t bs = {.op = WIRE_OP_BLOCK_STAT, .part = parts[i]};
    if (call(e, (req_t[]){with_cap(bs, &caps[i])}, &rep, NULL) != 0) return -1;
    s->used[i] = rep.arg0;
    if (i == 2) s->kv_keys = rep.arg1;
  }
  return 0;
}

static int same_state(const state_t *a, const state_t *b) {
  int ok = strcmp(a->file, b->file) == 0 && a->file_size == b->file_size &&
           a->q_len == b->q_len && strcmp(a->head, b->head) == 0 &&
           strcmp(a->value, b->value) == 0 && a->kv_keys == b->kv_keys &&
           memcmp(a->used, b->used, sizeof a->used) == 0;
  if (!ok) {
    fprintf(stderr, "  state changed: file '%s' -> '%s' (%llu -> %llu), queue %llu -> %llu "
            "('%s' -> '%s'), kv '%s' -> '%s' (%llu -> %llu keys)\n",
            a->file, b->file, (unsigned long long)a->file_size,
            (unsigned long long)b->file_size, (unsigned long long)a->q_len,
            (unsigned long long)b->q_len, a->head, b->head, a->value, b->value,
            (unsigned long long)a->kv_keys, (unsigned long long)b->kv_keys);
  }
  return ok;
}

/* The server's count of refusals (SERVER_STAT, with a STAT capability). */
static int64_t refusals(env_t *e) {
  cap_t st = sign(e->key, MF_RIGHT_STAT, (uint32_t)e->file.server_id, MF_CAP_ANY_BLOCK, 0,
                  wall_ms() + 60000, 0, 0);
  req_t r = {.op = WIRE_OP_SERVER_STAT};
  wire_hdr_t rep;
  uint8_t *p = NULL;
  if (call(e, (req_t[]){with_cap(r, &st)}, &rep, &p) != 0) return -1;
  wire_server_stat_t s;
  int rc = wire_server_stat_get(p, rep.payload_len, &s);
  g_free(p);
  return rc == 0 ? (int64_t)s.cap_refused : -1;
}

/* --- the tests --- */

/* Every opcode's request (with its payload), for the blocks of e. */
static int all_requests(const env_t *e, req_t *out, uint8_t bufs[][64]) {
  int n = 0;
  out[n++] = (req_t){.op = WIRE_OP_BLOCK_STAT, .part = &e->file};
  out[n++] = (req_t){.op = WIRE_OP_SERVER_STAT};
  out[n++] = (req_t){.op = WIRE_OP_FILE_WRITE, .part = &e->file, .payload = "XXXX", .plen = 4};
  out[n++] = (req_t){.op = WIRE_OP_FILE_READ, .part = &e->file, .arg1 = 16};
  out[n++] = (req_t){.op = WIRE_OP_FILE_SIZE, .part = &e->file};
  out[n++] = (req_t){.op = WIRE_OP_FILE_TRUNCATE, .part = &e->file, .arg0 = 0};
  out[n++] = (req_t){.op = WIRE_OP_Q_PUSH, .part = &e->queue, .payload = "planted", .plen = 7};
  out[n++] = (req_t){.op = WIRE_OP_Q_POP, .part = &e->queue};
  out[n++] = (req_t){.op = WIRE_OP_Q_PEEK, .part = &e->queue};
  out[n++] = (req_t){.op = WIRE_OP_Q_LEN, .part = &e->queue};
  out[n] = kv_req(e, WIRE_OP_KV_PUT, KEY1, "overwritten", bufs[n]);
  n++;
  out[n] = kv_req(e, WIRE_OP_KV_GET, KEY1, NULL, bufs[n]);
  n++;
  out[n] = kv_req(e, WIRE_OP_KV_DEL, KEY1, NULL, bufs[n]);
  n++;
  out[n] = kv_req(e, WIRE_OP_KV_EXISTS, KEY1, NULL, bufs[n]);
  n++;
  return n;
}

/* The capability r's block would carry, signed with the given rights,
 * expiry and key (for SERVER_STAT: the server-wide one). */
static cap_t cap_for(const env_t *e, const req_t *r, const uint8_t *key, uint8_t rights,
                     int64_t expiry, int server_delta, int gen_delta) {
  const mayfly_partition_t *p = r->part ? r->part : &e->file;
  uint32_t block = r->part ? (uint32_t)p->block_index : MF_CAP_ANY_BLOCK;
  uint64_t gen = r->part ? (uint64_t)(p->generation + gen_delta) : 0;
  return sign(key, rights, (uint32_t)(p->server_id + server_delta), block, gen, expiry, 0, 0);
}

static uint8_t right_of(uint8_t op) {
  switch (op) {
    case WIRE_OP_FILE_WRITE: case WIRE_OP_FILE_TRUNCATE: case WIRE_OP_Q_PUSH:
    case WIRE_OP_Q_POP: case WIRE_OP_KV_PUT: case WIRE_OP_KV_DEL:
      return MF_RIGHT_WRITE;
    case WIRE_OP_SERVER_STAT:
      return MF_RIGHT_STAT;
    default:
      return MF_RIGHT_READ;
  }
}

static void test_every_opcode_without_a_good_capability_is_refused_and_changes_nothing(void) {
  env_t e;
  if (env_start(&e) != 0) {
    CU_FAIL("could not start the cluster");
    env_stop(&e);
    return;
  }
  MF_ASSERT_EQ(put_data(&e), 0);
  state_t before, after;
  MF_ASSERT_EQ(read_state(&e, &before), 0);
  MF_ASSERT_EQ(strcmp(before.file, FILE_DATA), 0);
  MF_ASSERT_EQ(before.q_len, 1);
  MF_ASSERT_EQ(strcmp(before.value, VAL1), 0);
  int64_t refused0 = refusals(&e);
  CU_ASSERT(refused0 >= 0);

  req_t reqs[16];
  uint8_t bufs[16][64];
  int n = all_requests(&e, reqs, bufs);
  int sent = 0;
  int64_t now = wall_ms();
  uint8_t junk[MF_CAP_SIZE];
  mf_auth_random(junk, sizeof junk);
  for (int i = 0; i < n; i++) {
    req_t r = reqs[i];
    uint8_t need = right_of(r.op);
    uint8_t all = MF_RIGHTS_ALL;
    /* No capability at all. */
    MF_ASSERT_EQ(call(&e, &r, NULL, NULL), MAYFLY_EPERM);
    /* Random bytes; a capability signed with another key; expired (signed
     * with the right key); for another server; for another generation. */
    req_t j = r;
    j.area = junk;
    j.cap_len = MF_CAP_SIZE;
    MF_ASSERT_EQ(call(&e, &j, NULL, NULL), MAYFLY_EPERM);
    cap_t forged = cap_for(&e, &r, OTHER_KEY, all, now + 600000, 0, 0);
    MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(r, &forged)}, NULL, NULL), MAYFLY_EPERM);
    cap_t expired = cap_for(&e, &r, e.key, all, now - 1000, 0, 0);
    MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(r, &expired)}, NULL, NULL), MAYFLY_EPERM);
    cap_t server = cap_for(&e, &r, e.key, all, now + 600000, 1, 0);
    MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(r, &server)}, NULL, NULL), MAYFLY_EPERM);
    sent += 5;
    if (r.part != NULL) {
      cap_t gen = cap_for(&e, &r, e.key, all, now + 600000, 0, 1);
      MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(r, &gen)}, NULL, NULL), MAYFLY_EPERM);
      /* The good capability of another block of the same server. */
      const mayfly_partition_t *other = r.part == &e.kv ? &e.file : &e.kv;
      cap_t theirs = good(&e, other);
      MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(r, &theirs)}, NULL, NULL), MAYFLY_EPERM);
      sent += 2;
    }
    /* Every right but the one needed: a read-only capability for a write. */
    cap_t without = cap_for(&e, &r, e.key, (uint8_t)(all & ~need), now + 600000, 0, 0);
    MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(r, &without)}, NULL, NULL), MAYFLY_EPERM);
    sent++;
    if (need == MF_RIGHT_WRITE) {
      cap_t ro = cap_for(&e, &r, e.key, MF_RIGHT_READ, now + 600000, 0, 0);
      MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(r, &ro)}, NULL, NULL), MAYFLY_EPERM);
      sent++;
    }
  }
  /* PING carries no data: it needs nothing. */
  MF_ASSERT_EQ(call(&e, (req_t[]){{.op = WIRE_OP_PING}}, NULL, NULL), 0);

  MF_ASSERT_EQ(read_state(&e, &after), 0);
  CU_ASSERT(same_state(&before, &after));
  MF_ASSERT_EQ(refusals(&e) - refused0, sent);
  /* The good capabilities still do everything (the refusals were not the
   * test's frames being wrong). */
  for (int i = 0; i < n; i++) {
    req_t r = reqs[i];
    cap_t ok = cap_for(&e, &r, e.key, MF_RIGHTS_ALL, wall_ms() + 600000, 0, 0);
    int rc = call(&e, (req_t[]){with_cap(r, &ok)}, NULL, NULL);
    CU_ASSERT(rc != MAYFLY_EPERM && rc != 1);
  }
  env_stop(&e);
}

static void test_block_stat_enumeration_learns_nothing(void) {
  env_t e;
  if (env_start(&e) != 0) {
    CU_FAIL("could not start the cluster");
    env_stop(&e);
    return;
  }
  MF_ASSERT_EQ(put_data(&e), 0);
  int64_t refused0 = refusals(&e);
  int other = 0, probes = 0;
  cap_t file = good(&e, &e.file);
  for (uint32_t b = 0; b < 10; b++) {
    for (uint64_t g = 0; g < 40; g++) {
      req_t r = {.op = WIRE_OP_BLOCK_STAT, .block = b, .gen = g};
      if (call(&e, &r, NULL, NULL) != MAYFLY_EPERM) other++;
      /* A good capability for one block says nothing about the others. */
      if (b != (uint32_t)e.file.block_index || g != (uint64_t)e.file.generation) {
        if (call(&e, (req_t[]){with_cap(r, &file)}, NULL, NULL) != MAYFLY_EPERM) other++;
        probes++;
      }
      probes++;
    }
  }
  MF_ASSERT_EQ(other, 0);
  MF_ASSERT_EQ(refusals(&e) - refused0, probes);
  /* And the block itself, with its capability, answers. */
  req_t r = {.op = WIRE_OP_BLOCK_STAT, .part = &e.file};
  wire_hdr_t rep;
  MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(r, &file)}, &rep, NULL), 0);
  MF_ASSERT_EQ(rep.arg1, sizeof FILE_DATA - 1);
  env_stop(&e);
}

/* A migration frame for the kv block: slots [lo, hi), payload records. */
static req_t migrate(const env_t *e, uint8_t op, uint64_t lo, uint64_t hi, const uint8_t *rec,
                     uint32_t rlen) {
  return (req_t){.op = op, .part = &e->kv, .arg0 = lo, .arg1 = hi, .payload = rec, .plen = rlen};
}

static void test_forged_migrate_and_abort_frames_change_nothing(void) {
  env_t e;
  if (env_start(&e) != 0) {
    CU_FAIL("could not start the cluster");
    env_stop(&e);
    return;
  }
  MF_ASSERT_EQ(put_data(&e), 0);
  state_t before, after;
  MF_ASSERT_EQ(read_state(&e, &before), 0);
  uint8_t rec[64];
  wire_kv_entry_put(rec, "planted", 7, "evil", 4);
  uint32_t rlen = WIRE_KV_ENTRY_HEADER + 11;
  uint64_t lo = (uint64_t)e.kv.range_lo, hi = (uint64_t)e.kv.range_hi, mid = (lo + hi) / 2;
  uint32_t sid = (uint32_t)e.kv.server_id, blk = (uint32_t)e.kv.block_index;
  uint64_t gen = (uint64_t)e.kv.generation;
  int64_t later = wall_ms() + 600000;
  cap_t mig = sign(e.key, MF_RIGHT_MIGRATE, sid, blk, gen, later, lo, hi);
  cap_t narrow = sign(e.key, MF_RIGHT_MIGRATE, sid, blk, gen, later, lo, lo + 10);
  cap_t other_block = sign(e.key, MF_RIGHT_MIGRATE, sid, (uint32_t)e.file.block_index,
                           (uint64_t)e.file.generation, later, lo, hi);
  cap_t foreign = sign(OTHER_KEY, MF_RIGHT_MIGRATE, sid, blk, gen, later, lo, hi);
  cap_t expired = sign(e.key, MF_RIGHT_MIGRATE, sid, blk, gen, wall_ms() - 1, lo, hi);
  cap_t client = good(&e, &e.kv);
  const uint8_t ops[] = {WIRE_OP_KV_MIGRATE, WIRE_OP_KV_MIGRATE_ABORT};
  int64_t refused0 = refusals(&e);
  int sent = 0;
  for (int i = 0; i < 2; i++) {
    /* The frames an attacker can make: upper half of the slots (an abort
     * would drop them and shrink the range), or all of them. */
    const uint64_t spans[2][2] = {{mid, hi}, {lo, hi}};
    for (int s = 0; s < 2; s++) {
      req_t m = migrate(&e, ops[i], spans[s][0], spans[s][1], rec, ops[i] == WIRE_OP_KV_MIGRATE ? rlen : 0);
      MF_ASSERT_EQ(call(&e, &m, NULL, NULL), MAYFLY_EPERM); /* no area */
      req_t c = with_cap(m, &client);
      c.mac_key = e.key; /* a client's capability, even with a good MAC */
      MF_ASSERT_EQ(call(&e, &c, NULL, NULL), MAYFLY_EPERM);
      req_t nomac = with_cap(m, &mig); /* the right capability, no MAC */
      MF_ASSERT_EQ(call(&e, &nomac, NULL, NULL), MAYFLY_EPERM);
      req_t badmac = with_cap(m, &mig);
      badmac.bad_mac = 1;
      MF_ASSERT_EQ(call(&e, &badmac, NULL, NULL), MAYFLY_EPERM);
      req_t wrongkey = with_cap(m, &mig);
      wrongkey.mac_key = OTHER_KEY;
      MF_ASSERT_EQ(call(&e, &wrongkey, NULL, NULL), MAYFLY_EPERM);
      req_t slots = with_cap(m, &narrow); /* a capability for other slots */
      slots.mac_key = e.key;
      MF_ASSERT_EQ(call(&e, &slots, NULL, NULL), MAYFLY_EPERM);
      req_t ob = with_cap(m, &other_block);
      ob.mac_key = e.key;
      MF_ASSERT_EQ(call(&e, &ob, NULL, NULL), MAYFLY_EPERM);
      req_t fk = with_cap(m, &foreign);
      fk.mac_key = OTHER_KEY;
      MF_ASSERT_EQ(call(&e, &fk, NULL, NULL), MAYFLY_EPERM);
      req_t ex = with_cap(m, &expired);
      ex.mac_key = e.key;
      MF_ASSERT_EQ(call(&e, &ex, NULL, NULL), MAYFLY_EPERM);
      sent += 9;
    }
  }
  MF_ASSERT_EQ(refusals(&e) - refused0, sent);
  MF_ASSERT_EQ(read_state(&e, &after), 0);
  CU_ASSERT(same_state(&before, &after));
  /* Nothing planted. */
  uint8_t buf[64];
  req_t ex = kv_req(&e, WIRE_OP_KV_EXISTS, "planted", NULL, buf);
  wire_hdr_t rep;
  MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(ex, &client)}, &rep, NULL), 0);
  MF_ASSERT_EQ(rep.arg0, 0);
  /* The range is intact: puts of keys all over the slots still work. */
  for (int k = 0; k < 64; k++) {
    char key[32];
    g_snprintf(key, sizeof key, "owner-%d", k);
    req_t put = kv_req(&e, WIRE_OP_KV_PUT, key, "v", buf);
    MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(put, &client)}, NULL, NULL), 0);
  }
  req_t bs = {.op = WIRE_OP_BLOCK_STAT, .part = &e.kv};
  MF_ASSERT_EQ(call(&e, (req_t[]){with_cap(bs, &client)}, &rep, NULL), 0);
  MF_ASSERT_EQ(rep.arg1, 65);
  /* A genuine frame passes: the directory's kind of capability and the
   * sender's MAC (an empty migration inside the block's own range changes
   * nothing). */
  req_t real = with_cap(migrate(&e, WIRE_OP_KV_MIGRATE, lo, hi, NULL, 0), &mig);
  real.mac_key = e.key;
  MF_ASSERT_EQ(call(&e, &real, &rep, NULL), 0);
  MF_ASSERT_EQ(rep.arg0, 0);
  env_stop(&e);
}

/* --- repartitions between two memory servers with the key --- */

typedef struct {
  mf_daemon_t *d, *ms[2];
  int fd[2];
  mayfly_client_t *c;
} pair_t;

/* The connection to the server of partition p. */
static int fd_of(const pair_t *pr, const mayfly_partition_t *p) {
  for (int i = 0; i < 2; i++) {
    if (strcmp(pr->ms[i]->address, p->server_address) == 0) return pr->fd[i];
  }
  return -1;
}

/* The partition of the layout st holding key k's slot. */
static const mayfly_partition_t *part_of(const mayfly_stat_t *st, const char *k) {
  int64_t slot = wire_kv_slot(k, strlen(k));
  for (size_t i = 0; i < st->npartitions; i++) {
    if (slot >= st->partitions[i].range_lo && slot < st->partitions[i].range_hi) {
      return &st->partitions[i];
    }
  }
  return NULL;
}

/* One kv request for key k where the current layout says, with a good
 * capability, again on a fresh layout while the answer is EMOVED. Returns
 * the status. */
static int kv_where(env_t *e, pair_t *pr, const char *path, uint8_t op, const char *k,
                    const char *v, wire_hdr_t *rep, uint8_t **out) {
  int rc = MAYFLY_EMOVED;
  for (int attempt = 0; attempt < 50 && rc == MAYFLY_EMOVED; attempt++) {
    mayfly_stat_t *st = NULL;
    if (mayfly_stat(pr->c, path, &st) != 0) return 1;
    const mayfly_partition_t *p = part_of(st, k);
    uint8_t buf[256];
    if (p != NULL) {
      e->kv = *p;
      req_t r = kv_req(e, op, k, v, buf);
      cap_t c = good(e, p);
      rc = call_on(e, fd_of(pr, p), (req_t[]){with_cap(r, &c)}, rep, out);
    }
    mayfly_stat_free(st);
    if (rc == MAYFLY_EMOVED) mf_sleep_ms(20);
  }
  return rc;
}

static size_t partitions(pair_t *pr, const char *path) {
  mayfly_stat_t *st = NULL;
  size_t n = mayfly_stat(pr->c, path, &st) == 0 ? st->npartitions : 0;
  mayfly_stat_free(st);
  return n;
}

#define GROW_KEYS 600

/* With the key, the memory servers still move data between themselves: a
 * split's KV_MIGRATE frames carry the directory's migrate capability and
 * their MAC and the target takes them; a merge reads its neighbour's fill
 * with a capability of its own and moves everything back. */
static void test_splits_and_merges_between_servers_work_with_the_key(void) {
  env_t e;
  pair_t pr = {.fd = {-1, -1}};
  memset(&e, 0, sizeof e);
  e.fd = -1;
  e.tmp = g_dir_make_tmp("mayfly-capcheck-XXXXXX", NULL);
  CU_ASSERT_FATAL(e.tmp != NULL && write_key_file(&e) == 0);
  pr.d = mf_start_directory("--cluster-key-file", e.key_path, NULL);
  CU_ASSERT_FATAL(pr.d != NULL);
  for (int i = 0; i < 2; i++) {
    pr.ms[i] = mf_start_memserver(pr.d, 16, "64KiB", "--cluster-key-file", e.key_path, NULL);
    CU_ASSERT_FATAL(pr.ms[i] != NULL);
    pr.fd[i] = mf_raw_connect(pr.ms[i]->port, 5);
  }
  CU_ASSERT_FATAL(mayfly_connect(pr.d->address, NULL, &pr.c) == 0);
  const char *path = "/cap/grow";
  CU_ASSERT_FATAL(mayfly_create(pr.c, path, MAYFLY_KIND_KV, NULL, NULL) == 0);
  char val[128];
  memset(val, 'v', sizeof val - 1);
  val[sizeof val - 1] = '\0';
  int failed = 0;
  for (int k = 0; k < GROW_KEYS; k++) {
    char key[32];
    g_snprintf(key, sizeof key, "grow-%04d", k);
    if (kv_where(&e, &pr, path, WIRE_OP_KV_PUT, key, val, NULL, NULL) != 0) failed++;
  }
  MF_ASSERT_EQ(failed, 0);
  size_t n = partitions(&pr, path);
  CU_ASSERT(n >= 2);
  /* Every key reads back from wherever it went. */
  int missing = 0;
  for (int k = 0; k < GROW_KEYS; k++) {
    char key[32];
    g_snprintf(key, sizeof key, "grow-%04d", k);
    wire_hdr_t rep;
    uint8_t *p = NULL;
    int rc = kv_where(&e, &pr, path, WIRE_OP_KV_GET, key, NULL, &rep, &p);
    if (rc != 0 || rep.payload_len != strlen(val) || memcmp(p, val, rep.payload_len) != 0) {
      missing++;
    }
    if (rc == 0) g_free(p);
  }
  MF_ASSERT_EQ(missing, 0);
  /* Empty, the partitions merge back into one. */
  for (int k = 0; k < GROW_KEYS; k++) {
    char key[32];
    g_snprintf(key, sizeof key, "grow-%04d", k);
    if (kv_where(&e, &pr, path, WIRE_OP_KV_DEL, key, NULL, NULL, NULL) != 0) failed++;
  }
  MF_ASSERT_EQ(failed, 0);
  for (int i = 0; i < 300 && partitions(&pr, path) > 1; i++) mf_sleep_ms(50);
  MF_ASSERT_EQ(partitions(&pr, path), 1);
  MF_ASSERT_EQ(kv_where(&e, &pr, path, WIRE_OP_KV_PUT, "after", "merge", NULL, NULL), 0);
  for (int i = 0; i < 2; i++) {
    MF_ASSERT_EQ(mf_log_count(pr.ms[i], "permission"), 0);
    if (pr.fd[i] >= 0) close(pr.fd[i]);
    MF_ASSERT_EQ(mf_stop(pr.ms[i]), 0);
  }
  mayfly_disconnect(pr.c);
  MF_ASSERT_EQ(mf_stop(pr.d), 0);
  env_stop(&e);
}

int main(void) {
  if (mf_auth_init() != 0) return 2;
  static const mf_test_t tests[] = {
      {"every opcode without a good capability is refused and changes nothing",
       test_every_opcode_without_a_good_capability_is_refused_and_changes_nothing},
      {"BLOCK_STAT enumeration learns nothing", test_block_stat_enumeration_learns_nothing},
      {"forged migrate and abort frames change nothing",
       test_forged_migrate_and_abort_frames_change_nothing},
      {"splits and merges between servers work with the key",
       test_splits_and_merges_between_servers_work_with_the_key},
      {NULL, NULL}};
  return mf_test_run("capcheck", NULL, NULL, tests);
}
