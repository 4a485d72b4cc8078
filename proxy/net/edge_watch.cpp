// Sockets watched in the thread's Asio reactor (see edge_watch.hpp).
#include "proxy/net/edge_watch.hpp"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <filesystem>
#include <iterator>
#include <set>
#include <string>
#include <vector>

namespace tokengate::net {

namespace {

thread_local int t_reactor = -1;

// The epoll descriptors the process has open.
std::set<int> epoll_fds() {
  std::set<int> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    std::error_code lec;
    auto target = std::filesystem::read_symlink(e.path(), lec);
    if (lec || target.string() != "anon_inode:[eventpoll]") continue;
    try {
      out.insert(std::stoi(e.path().filename().string()));
    } catch (...) {
    }
  }
  return out;
}

}  // namespace

int find_reactor_epoll(boost::asio::io_context& ctx) {
  // Asio does not say which descriptor its reactor waits on: it is the epoll
  // set that appears when the reactor is created (a timer creates it).
  const auto before = epoll_fds();
  { boost::asio::steady_timer init(ctx); }
  const auto after = epoll_fds();
  std::vector<int> created;
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(), std::back_inserter(created));
  if (created.size() != 1) {
    spdlog::warn("Asio's reactor descriptor not found: relaying with Asio's own waits (slower)");
    return -1;
  }
  return created[0];
}

void bind_thread_reactor(int epoll_fd) noexcept { t_reactor = epoll_fd; }
int thread_reactor() noexcept { return t_reactor; }

bool EdgeWatcher::watch(int fd) noexcept {
  if (t_reactor < 0) return false;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  // The pointer Asio will take for its per-descriptor operation.
  ev.data.ptr = static_cast<scheduler_operation*>(this);
  if (::epoll_ctl(t_reactor, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  fd_ = fd;
  epoll_ = t_reactor;
  return true;
}

void EdgeWatcher::want_write(bool on) noexcept {
  if (fd_ < 0 || on == writing_) return;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (on ? EPOLLOUT : 0u);
  ev.data.ptr = static_cast<scheduler_operation*>(this);
  if (::epoll_ctl(epoll_, EPOLL_CTL_MOD, fd_, &ev) == 0) writing_ = on;
}

void EdgeWatcher::unwatch() noexcept {
  if (fd_ < 0) return;
  epoll_event ev{};
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd_, &ev);
  fd_ = -1;
  callback_ = nullptr;
}

void EdgeWatcher::complete(void* owner, scheduler_operation* base, const boost::system::error_code&,
                           std::size_t events) {
  if (owner == nullptr) return;  // the io_context is being destroyed
  // The scheduler counts this completion as finished work, but it never was
  // started work (Asio does the same for its own descriptor operations).
  static_cast<boost::asio::detail::scheduler*>(owner)->compensating_work_started();
  auto* self = static_cast<EdgeWatcher*>(base);
  if (self->callback_ != nullptr) self->callback_(self->context_, std::uint32_t(events));
}

}  // namespace tokengate::net
