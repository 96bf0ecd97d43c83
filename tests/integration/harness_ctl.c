/*
 * Harness calls that speak the control API directly (see harness.h).
 */
#include "common/ctl.h"
#include "common/error.h"
#include "harness.h"

int mf_register_blocks(const mf_daemon_t *dir, const char *address, int blocks,
                       long long block_size, int *id) {
  return mf_register_as(dir, address, blocks, block_size, 0, id);
}

int mf_register_as(const mf_daemon_t *dir, const char *address, int blocks, long long block_size,
                   int64_t incarnation, int *id) {
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(dir->address, 5000, 2000, &ctl);
  if (rc != 0) return rc;
  MayflyRegisterReply *r = NULL;
  rc = mf_ctl_register(ctl, address, blocks, block_size, 0, incarnation, NULL, &r);
  if (rc == 0) {
    *id = r->server_id;
    g_object_unref(r);
  }
  mf_ctl_close(ctl);
  return rc;
}

int mf_heartbeat(const mf_daemon_t *dir, int id, int *released) {
  return mf_heartbeat_as(dir, id, 0, released);
}

int mf_heartbeat_as(const mf_daemon_t *dir, int id, int64_t incarnation, int *released) {
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(dir->address, 5000, 2000, &ctl);
  if (rc != 0) return rc;
  MayflyDirectoryIf *i;
  rc = mf_ctl_begin(ctl, &i);
  if (rc == 0) {
    MayflyHeartbeatReply *r = g_object_new(MAYFLY_TYPE_HEARTBEAT_REPLY, NULL);
    MayflyError *err = NULL;
    GError *gerr = NULL;
    gboolean ok = mayfly_directory_if_heartbeat(i, &r, id, 0, incarnation, &err, &gerr);
    rc = mf_ctl_end(ctl, ok, err, gerr);
    if (rc == 0 && released != NULL) *released = (int)r->release->len;
    g_object_unref(r);
  }
  mf_ctl_close(ctl);
  return rc;
}

int mf_ctl_create(mf_ctl_t *ctl, const char *path, int kind, int replicas) {
  MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  MayflyCreateOptions *o = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
  o->blocks = 1;
  if (replicas > 0) {
    o->replicas = replicas;
    o->__isset_replicas = TRUE;
  }
  int rc = MF_CTL_CALL(ctl, create_ns, &ni, path, (MayflyNodeKind)kind, o, 0, 0);
  g_object_unref(o);
  g_object_unref(ni);
  return rc;
}

MayflyPartition *mf_ctl_first_part(mf_ctl_t *ctl, const char *path) {
  MayflyLayout *l = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  MayflyPartition *p = NULL;
  if (MF_CTL_CALL(ctl, get_layout, &l, path) == 0 && l->partitions->len > 0) {
    p = g_object_ref(g_ptr_array_index(l->partitions, 0));
  }
  g_object_unref(l);
  return p;
}
