/*
 * MfFrameTransport: a Thrift transport for framed messages (4-byte big-endian
 * length + message) that reads in linear time and never blocks forever.
 *
 * Why not the library's framed transport: Thrift c_glib 0.17 serves reads with
 * g_byte_array_remove_range per primitive (quadratic in the frame size), fails
 * when a frame arrives in two pieces over ThriftFDTransport, has no timeouts,
 * and sends without MSG_NOSIGNAL (THRIFT_C_GLIB.md). This transport keeps a
 * cursor over one whole frame instead.
 *
 * Two modes:
 * - memory (fd < 0), for the directory's loop: set_input() lends it one
 *   complete frame's payload; the processor reads from it and writes the reply
 *   into an internal buffer that take_output() hands over, length prefix
 *   included. It never touches a socket.
 * - socket (fd >= 0), for the blocking clients: flush() sends the buffered
 *   message as one frame and starts the call's clock; the first read of a
 *   reply receives one whole frame. Sending and receiving together take at
 *   most timeout_ms, however the bytes trickle in; the frame's storage grows
 *   as its bytes arrive (a length prefix alone never reserves memory).
 *
 * In both modes a read past the end of the frame, a container or string that
 * claims more bytes than the frame holds, or a frame over max_frame is an
 * error before anything is allocated. Not thread-safe: one user at a time.
 */
#ifndef MAYFLY_FRAME_TRANSPORT_H
#define MAYFLY_FRAME_TRANSPORT_H

#include <glib-object.h>
#include <stdint.h>
#include <thrift/c_glib/transport/thrift_transport.h>

G_BEGIN_DECLS

#define MF_TYPE_FRAME_TRANSPORT (mf_frame_transport_get_type())
/* G_DECLARE_FINAL_TYPE needs an autoptr cleanup for the parent type. */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ThriftTransport, g_object_unref)
G_DECLARE_FINAL_TYPE(MfFrameTransport, mf_frame_transport, MF, FRAME_TRANSPORT, ThriftTransport)

/* Largest control-plane frame by default: 4 MiB (a renew of 10,000 paths is
 * under 1 MiB). */
#define MF_FRAME_MAX_DEFAULT (4u << 20)

/* Creates a transport. fd < 0 gives memory mode; fd >= 0 is borrowed (the
 * caller closes it after unref'ing the transport). */
MfFrameTransport *mf_frame_transport_new(int fd, int timeout_ms, uint32_t max_frame);

/* Memory mode: the next reads come from data[0..len) (borrowed until the next
 * call); the output buffer is emptied. */
void mf_frame_transport_set_input(MfFrameTransport *t, const uint8_t *data, size_t len);

/* Memory mode: returns the reply written since set_input() as a complete
 * frame (length prefix filled in), and its size in *len. The buffer stays
 * owned by the transport and valid until the next set_input(). Returns NULL
 * when nothing was written (a oneway call). */
const uint8_t *mf_frame_transport_output(MfFrameTransport *t, size_t *len);

/* Returns 1 if the last socket error was a timeout (socket mode). */
int mf_frame_transport_timed_out(const MfFrameTransport *t);

/* Socket mode: the budget of the next request's send and reply, from its
 * flush on (the control connection gives each attempt of a call what is
 * left of the call's deadline). */
void mf_frame_transport_set_timeout(MfFrameTransport *t, int timeout_ms);

/* Socket mode: 1 if a whole reply frame arrived since the last request was
 * sent (a failure after that is in the reply's contents, not the
 * transport's: the generated reader may have filled part of its results). */
int mf_frame_transport_got_reply(const MfFrameTransport *t);

G_END_DECLS

#endif /* MAYFLY_FRAME_TRANSPORT_H */
