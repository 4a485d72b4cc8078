// Telling systemd (a Type=notify unit) that tokengate is ready, reloading or
// stopping. Without libsystemd at build time, or when not started by systemd
// (no $NOTIFY_SOCKET), this does nothing.
#pragma once

namespace tokengate::net {

// Sends `state` ("READY=1", "RELOADING=1", "STOPPING=1", "STATUS=…") to the
// service manager. Never fails: the service works the same without it.
void systemd_notify(const char* state) noexcept;

}  // namespace tokengate::net
