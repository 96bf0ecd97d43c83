/*
 * The Thrift handler of the control API: thin adapters that convert the
 * generated structs to Mayfly types, call the directory core, and convert the
 * result back. Errors become the declared Error exception carrying a
 * MAYFLY_E* code and a sentence for a human. Runs on the directory's loop.
 */
#ifndef MAYFLY_DIR_HANDLER_H
#define MAYFLY_DIR_HANDLER_H

#include <mayfly_directory.h>

#include "directory/directory.h"

/* Creates the handler object serving `d` (borrowed). Unref when done. */
MayflyDirectoryHandler *dir_handler_new(dir_t *d);

#endif /* MAYFLY_DIR_HANDLER_H */
