// sd_notify(3) when built with libsystemd (meson option `systemd`), else nothing.
#include "proxy/net/systemd_notify.hpp"

#ifdef TOKENGATE_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace tokengate::net {

void systemd_notify(const char* state) noexcept {
#ifdef TOKENGATE_HAVE_LIBSYSTEMD
  // unset_environment = 0: later notifications (reload, stop) need the socket too.
  (void)sd_notify(0, state);
#else
  (void)state;
#endif
}

}  // namespace tokengate::net
