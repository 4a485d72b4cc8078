// An LD_PRELOAD shim for tests: a disk whose syncs are slow, for files under one directory.
//
// fsync, fdatasync and msync of a file under $TG_SLOW_SYNC_DIR sleep
// $TG_SLOW_SYNC_MS milliseconds (default 2000) before doing the real call,
// but only while the file $TG_SLOW_SYNC_SWITCH exists, so a process can
// start at full speed and the test turns the slow disk on when it wants.
// Everything else passes straight through. Used by
// tests/integration/test_store_io.py: a CREATE API TOKEN waiting for such a
// disk must not stall other sessions of the same I/O thread.
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

bool under_slow_dir(const std::string& path) {
  const char* dir = env("TG_SLOW_SYNC_DIR");
  if (dir == nullptr || path.empty()) return false;
  const std::size_t n = std::strlen(dir);
  return path.compare(0, n, dir) == 0 && (path.size() == n || path[n] == '/' || dir[n - 1] == '/');
}

bool switched_on() {
  const char* sw = env("TG_SLOW_SYNC_SWITCH");
  return sw != nullptr && ::access(sw, F_OK) == 0;
}

void slow_down() {
  const char* ms_text = env("TG_SLOW_SYNC_MS");
  long ms = ms_text != nullptr ? std::strtol(ms_text, nullptr, 10) : 2000;
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

std::string path_of_fd(int fd) {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char buf[4096];
  const ssize_t n = ::readlink(link, buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, std::size_t(n)) : std::string();
}

// The file mapped at addr, from /proc/self/maps.
std::string path_of_mapping(const void* addr) {
  std::FILE* f = std::fopen("/proc/self/maps", "r");
  if (f == nullptr) return {};
  const auto a = reinterpret_cast<unsigned long>(addr);
  char line[4096 + 128];
  std::string out;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    unsigned long lo = 0, hi = 0;
    int path_at = 0;
    if (std::sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &path_at) < 2) continue;
    if (a < lo || a >= hi) continue;
    out = line + path_at;
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    break;
  }
  std::fclose(f);
  return out;
}

template <typename Fn>
Fn next(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

int fsync(int fd) {
  static auto real = next<int (*)(int)>("fsync");
  if (switched_on() && under_slow_dir(path_of_fd(fd))) slow_down();
  return real(fd);
}

int fdatasync(int fd) {
  static auto real = next<int (*)(int)>("fdatasync");
  if (switched_on() && under_slow_dir(path_of_fd(fd))) slow_down();
  return real(fd);
}

int msync(void* addr, size_t length, int flags) {
  static auto real = next<int (*)(void*, size_t, int)>("msync");
  if ((flags & MS_SYNC) != 0 && switched_on() && under_slow_dir(path_of_mapping(addr))) slow_down();
  return real(addr, length, flags);
}

}  // extern "C"
