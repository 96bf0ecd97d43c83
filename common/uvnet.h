/*
 * Small libuv helpers shared by the daemons.
 */
#ifndef MAYFLY_UVNET_H
#define MAYFLY_UVNET_H

#include <stddef.h>
#include <uv.h>

/* Writes "ip:port" of a connected TCP handle's peer into out ("?:0" if unknown). */
void mf_peer_name(uv_tcp_t *tcp, char *out, size_t outlen);

#endif /* MAYFLY_UVNET_H */
