/*
 * MF_CHECK(cond): an invariant of Mayfly's own state (a refcount, a
 * repartition state transition) that must hold. It stays on in every build,
 * release included, as Redis's serverAssert does: when it fails the process
 * logs the file, line and condition and aborts, because going on would
 * corrupt data. Never use it on input from a socket, file or command line:
 * bad input is an error reply or a closed connection.
 */
#ifndef MAYFLY_CHECK_H
#define MAYFLY_CHECK_H

void mf_check_failed(const char *cond, const char *file, int line, const char *func)
    __attribute__((noreturn));

#define MF_CHECK(cond)                                                 \
  do {                                                                 \
    if (__builtin_expect(!(cond), 0)) {                                \
      mf_check_failed(#cond, __FILE__, __LINE__, __func__);            \
    }                                                                  \
  } while (0)

#endif /* MAYFLY_CHECK_H */
