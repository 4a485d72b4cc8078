// The audit log on a full disk, for real: a small tmpfs is mounted and filled;
// a line that does not fit is left out whole (never torn), counted, and
// reported in the server log at a bounded rate. Needs permission to mount
// (root, as the test machines run); skipped otherwise.
#include <fcntl.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "proxy/audit.hpp"

using tokengate::AuditEvent;
using tokengate::AuditLog;

namespace {

// A tmpfs of `bytes` mounted on a fresh directory for one test.
class SmallFs {
 public:
  explicit SmallFs(std::size_t bytes) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/tg-audit-full-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
    std::string opts = "size=" + std::to_string(bytes) + ",mode=0700";
    if (::mount("tmpfs", path_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) == 0)
      mounted_ = true;
    else
      why_ = std::strerror(errno);
  }
  ~SmallFs() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  SmallFs(const SmallFs&) = delete;
  SmallFs& operator=(const SmallFs&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
  bool mounted_ = false;
  std::string why_;
};

// Writes `path` until the file system is full.
void fill(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  std::string block(4096, 'f');
  while (::write(fd, block.data(), block.size()) > 0) {
  }
  const int err = errno;
  ::close(fd);
  REQUIRE(err == ENOSPC);
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every line is a whole JSON object ending in a newline.
void check_whole_lines(const std::string& content) {
  REQUIRE((content.empty() || content.back() == '\n'));
  std::istringstream in(content);
  for (std::string line; std::getline(in, line);) {
    INFO("line: " << line);
    boost::json::error_code ec;
    auto v = boost::json::parse(line, ec);
    CHECK_FALSE(ec);
    CHECK(v.is_object());
  }
}

// Captures what the server log says during a test.
struct LogCapture {
  std::ostringstream out;
  std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
  LogCapture() {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous); }
  std::size_t count(const std::string& needle) const {
    std::string s = out.str();
    std::size_t n = 0;
    for (auto at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
    return n;
  }
};

}  // namespace

TEST_CASE("audit: on a full disk a line is whole or absent, counted, and reported at a bounded rate") {
  SmallFs fs(std::size_t{256} << 10);
  if (!fs.mounted()) {
    WARN("cannot mount a tmpfs here (" << fs.why() << "): the full-disk audit test is skipped");
    return;
  }
  LogCapture log_capture;
  const std::string path = fs.file("audit.log");
  AuditLog log(path);
  REQUIRE_FALSE(log.open());
  AuditEvent e{.event = "login", .actor = "alice", .method = "token", .outcome = "ok"};
  // Leave fewer bytes in the file's last page than the next line needs, so
  // that line can only partly fit once the disk is full.
  auto base = std::chrono::system_clock::time_point{} + std::chrono::hours(500000);
  for (int i = 0; i < 1000; ++i) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    const auto room = 4096 - st.st_size % 4096;
    if (st.st_size > 0 && room > 40 && room < 120) break;
    e.application_name = std::string(1 + i % 37, 'a');
    log.write(e, base);
  }
  const std::string before = read_all(path);
  check_whole_lines(before);
  REQUIRE(before.size() % 4096 > 3976);

  fill(fs.file("filler"));
  e.application_name = std::string(400, 'b');  // longer than the room left: a partial write
  for (int i = 0; i < 5; ++i) log.write(e, base);
  CHECK(read_all(path) == before);  // nothing torn left behind
  CHECK(log.failed_writes() == 5u);
  // One report for the five, naming the reason and the count.
  CHECK(log_capture.count("cannot write (No space left on device); 1 line(s) lost since the last report, 1 in all") ==
        1u);
  CHECK(log_capture.count("cannot write") == 1u);

  std::filesystem::remove(fs.file("filler"));
  log.write(e, base);
  const std::string after = read_all(path);
  check_whole_lines(after);
  CHECK(after.size() > before.size());
  CHECK(after.substr(0, before.size()) == before);
  CHECK(log.failed_writes() == 5u);
  CHECK(log_capture.count("writing again; 5 line(s) were lost in all") == 1u);
}
