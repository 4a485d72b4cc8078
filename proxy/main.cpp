// tokengate's main(): no core dumps (a dump would hold passwords, tokens and
// signing keys), then everything is in run_cli().
#include <sys/prctl.h>
#include <sys/resource.h>

#include "proxy/cli.hpp"

int main(int argc, char** argv) {
  // Not dumpable: no core file, and no ptrace attach or /proc/PID/mem reads
  // by other processes of the same user.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  struct rlimit none {};
  ::setrlimit(RLIMIT_CORE, &none);
  return tokengate::run_cli(argc, argv);
}
